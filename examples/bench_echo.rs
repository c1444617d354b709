//! Benchmark baseline (a): the HTTP ceiling. A tiny actix-web server with no database
//! that serves the create- and list-messages route in the same shapes as neptun-chat:
//! it parses the JSON body of `POST /api/users/{user_id}/chats/{chat_id}/messages`
//! (`{"message", "actor"}` or `{"messages": [{"content", "role"}, ...]}`) and answers a
//! `chatMessage` / `chatMessages` body built from the same domain types the service
//! renders; `GET` on the same path answers a page of 100 canned messages.
//!
//! It is a bench-only example, not part of the product: it checks no session, stores
//! nothing and validates only the shape. `bench/run.sh` starts it next to the real
//! server and reports every workload as a ratio to it. It prints `listening on ADDR`
//! on stdout once bound, and runs until it is signalled.

use std::net::TcpListener;
use std::sync::atomic::{AtomicI64, Ordering};

use actix_web::http::header::ContentType;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context;
use clap::Parser;
use neptun_chat::domain::{ChatMessage, Role, Timestamp};
use serde::{Deserialize, Serialize};

/// How many canned messages a `GET` answers, like `?limit=100` on a large chat.
const PAGE: i64 = 100;

/// Serves the messages route without a database, as a ceiling for the benchmark.
#[derive(Debug, Parser)]
#[command(name = "bench_echo")]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: String,
    /// Text of each canned message in a `GET` answer.
    #[arg(
        long,
        default_value = "Benchmark message: the quick brown fox jumps over the lazy dog while the chat store appends it to a conversation."
    )]
    text: String,
}

/// One message of a batch.
#[derive(Deserialize)]
struct BatchItem {
    content: String,
    role: String,
}

/// The two body forms of the real route.
#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Single { message: String, actor: String },
    Batch { messages: Vec<BatchItem> },
}

/// `{"chatMessage"}` or `{"chatMessages"}`, as the service answers.
#[derive(Serialize)]
#[serde(untagged)]
enum Created {
    One {
        #[serde(rename = "chatMessage")]
        chat_message: ChatMessage,
    },
    Many {
        #[serde(rename = "chatMessages")]
        chat_messages: Vec<ChatMessage>,
    },
}

/// `{"chatMessages": [...], "next"}`, as the service answers a page.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Page<'a> {
    chat_messages: &'a [ChatMessage],
    next: Option<i64>,
}

/// Shared state: the next id to hand out and the canned page.
struct State {
    next_id: AtomicI64,
    page: Vec<ChatMessage>,
}

fn message(id: i64, chat: i64, user: &str, text: String, role: Role) -> ChatMessage {
    ChatMessage {
        id,
        chat_conversation_id: chat,
        neptun_user_id: user.to_owned(),
        message: text,
        actor: role,
        created_at: Timestamp::now(),
    }
}

fn bad_request() -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type(ContentType::json())
        .body(r#"{"statusCode":400,"statusMessage":"Bad Request","message":"invalid body"}"#)
}

async fn create(
    state: web::Data<State>,
    path: web::Path<(String, i64)>,
    body: web::Bytes,
) -> HttpResponse {
    let (user, chat) = path.into_inner();
    let Ok(parsed) = serde_json::from_slice::<Body>(&body) else {
        return bad_request();
    };
    let created = match parsed {
        Body::Single {
            message: text,
            actor,
        } => {
            let Some(role) = Role::parse(&actor) else {
                return bad_request();
            };
            let id = state.next_id.fetch_add(1, Ordering::Relaxed);
            Created::One {
                chat_message: message(id, chat, &user, text, role),
            }
        }
        Body::Batch { messages } => {
            let count = i64::try_from(messages.len()).unwrap_or(i64::MAX);
            let first = state.next_id.fetch_add(count, Ordering::Relaxed);
            let mut stored = Vec::with_capacity(messages.len());
            for (id, item) in (first..).zip(messages) {
                let Some(role) = Role::parse(&item.role) else {
                    return bad_request();
                };
                stored.push(message(id, chat, &user, item.content, role));
            }
            Created::Many {
                chat_messages: stored,
            }
        }
    };
    match serde_json::to_string(&created) {
        Ok(json) => HttpResponse::Ok()
            .content_type(ContentType::json())
            .body(json),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn list(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(Page {
        chat_messages: &state.page,
        next: state.page.first().map(|m| m.id),
    })
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    let page = (1..=PAGE)
        .map(|id| message(id, 1, "bench", args.text.clone(), Role::User))
        .collect();
    let state = web::Data::new(State {
        next_id: AtomicI64::new(PAGE + 1),
        page,
    });
    // The same number of workers as the service, so the two compare like for like.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let server = HttpServer::new(move || {
        App::new().app_data(state.clone()).service(
            web::resource("/api/users/{user_id}/chats/{chat_id}/messages")
                .route(web::post().to(create))
                .route(web::get().to(list)),
        )
    })
    .workers(workers)
    .listen(listener)?
    .run();
    println!("listening on {address}");
    server.await?;
    Ok(())
}
