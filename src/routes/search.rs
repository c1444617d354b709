//! `GET /api/users/{user_id}/search`: full-text search across the user's chats (see
//! [`crate::search`] for what a query may hold).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Check, Claim};
use crate::db::Db;
use crate::domain::{ChatMessage, SearchPosition};
use crate::error::ApiError;
use crate::routes::schema::{ErrorBody, SessionErrors, UserPathParams};
use crate::search;
use crate::validation::{self, SEARCH_PARAMS, SearchCursor};

/// The chat a hit is in.
#[derive(Serialize, ToSchema)]
pub(super) struct HitChat {
    id: i64,
    name: String,
}

/// One message found.
#[derive(Serialize, ToSchema)]
pub(super) struct Hit {
    message: ChatMessage,
    chat: HitChat,
    /// A short piece of the message around its first match, as HTML: the text is
    /// escaped, and `<mark>`…`</mark>` around each matched word is the only markup.
    /// `…` stands for text left out.
    snippet: String,
    /// How well it matches, higher is better; comparable within one search only.
    score: f64,
}

/// `{"results": [Hit], "next_cursor", "complete"}`
#[derive(Serialize, ToSchema)]
pub(super) struct SearchResults {
    /// Best match first; ties newest first.
    results: Vec<Hit>,
    /// Give it as `cursor` (with the same other parameters) for the next page; null on
    /// the last page.
    next_cursor: Option<String>,
    /// False while messages stored before this server had search are still being
    /// indexed (in the background, at start-up); some of them may then be missing.
    complete: bool,
}

/// `GET .../search?q=...`: the user's messages that match, best first.
#[utoipa::path(
    get,
    path = "/api/users/{user_id}/search",
    operation_id = "search",
    tag = "search",
    security(("session_cookie" = [])),
    params(
        UserPathParams,
        ("q" = String, Query, description = "What to look for: words (all must match), \"a quoted phrase\", a prefix such as chat*, -word or -\"a phrase\" to leave out. Case and accents do not matter."),
        ("chat_id" = Option<i64>, Query, minimum = 1, description = "Only this chat's messages"),
        ("actor" = Option<String>, Query, pattern = "^(user|assistant|system)$", description = "Only messages of this role"),
        ("since" = Option<String>, Query, format = DateTime, description = "Only messages stored at or after this time (RFC 3339)"),
        ("until" = Option<String>, Query, format = DateTime, description = "Only messages stored before this time (RFC 3339)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "Hits per page, default 20"),
        ("cursor" = Option<String>, Query, description = "The next_cursor of the page before"),
    ),
    responses(
        (status = 200, description = "The hits, best first", body = SearchResults),
        (status = 400, description = "Invalid query parameters (a query that cannot be read, among them)", body = ErrorBody),
        (status = 404, description = "chat_id is not a chat of this user", body = ErrorBody),
        SessionErrors,
    )
)]
pub(super) async fn search(
    db: web::Data<Db>,
    claim: Claim,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let inputs = |_key| async {
        let invalid = |issues| ApiError::InvalidQuery {
            fields: "q, chat_id, actor, since, until, limit, cursor",
            issues,
        };
        let query = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map_err(|err| invalid(vec![validation::Issue::unparsable_query(&err)]))?;
        validation::single_params(&query, &SEARCH_PARAMS)
            .and_then(|values| validation::parse_search_query(&values))
            .map_err(invalid)
    };
    let (request, page) = claim
        .run(Check::First, inputs, |claim, request| async move {
            if let Some(chat) = request.filter.chat_id {
                db.chat(claim.user_id.clone(), chat).await?;
            }
            // One more than asked for: whether there is a next page.
            let page = db
                .search(
                    claim.user_id,
                    request.query.clone(),
                    request.filter.clone(),
                    request.cursor.map(|cursor| cursor.newest),
                    request.cursor.map(|cursor| cursor.position),
                    request.limit + 1,
                )
                .await?;
            Ok((request, page))
        })
        .await?;
    let more = page.hits.len() > request.limit;
    let results: Vec<Hit> = page
        .hits
        .into_iter()
        .take(request.limit)
        .map(|hit| Hit {
            snippet: search::snippet(&hit.message.message, &request.query),
            chat: HitChat {
                id: hit.message.chat_conversation_id,
                name: hit.chat_name,
            },
            score: hit.score,
            message: hit.message,
        })
        .collect();
    let next_cursor = results.last().filter(|_| more).map(|last| {
        SearchCursor {
            position: SearchPosition {
                score: last.score,
                id: last.message.id,
            },
            newest: page.newest,
        }
        .to_string()
    });
    Ok(HttpResponse::Ok().json(SearchResults {
        results,
        next_cursor,
        complete: page.complete,
    }))
}
