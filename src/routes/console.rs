//! The web console: `GET /` serves its page and `GET /console/{file}` its scripts and
//! style sheet, all compiled into the binary (no CDN, works offline). The console is a
//! client of the public API and nothing more: it must not get routes, data or
//! privileges of its own, so everything it shows a user the API would show them too.
//!
//! Every file is served under a strict Content-Security-Policy (no inline script or
//! style, no request to another origin), so that a message text that slipped past the
//! console's escaping still could not run. Responses carry `Cache-Control: no-cache`
//! and an `ETag`: a browser revalidates on each visit and gets a 304 for the files it
//! has, and a new binary's console is never mixed with an old cached script.

use std::sync::LazyLock;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, IF_NONE_MATCH};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What the console may load: its own files and its own API, nothing inline.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

const JS: &str = "text/javascript; charset=utf-8";

/// Where the page is in [`FILES`].
const PAGE: usize = 0;

/// The console's files: name under `/console/`, content type, bytes. The page comes
/// first, at [`PAGE`].
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/console/index.html"),
    ),
    ("app.js", JS, include_bytes!("../../assets/console/app.js")),
    ("api.js", JS, include_bytes!("../../assets/console/api.js")),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/console.css"),
    ),
];

/// Each file's entity tag, in the order of [`FILES`]: a digest of the bytes, so it
/// changes exactly when the file does.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(_, _, body)| {
            let digest = Sha256::digest(body);
            format!("\"{}\"", crate::domain::hex(&digest[..12]))
        })
        .collect()
});

/// `GET /`: the console's page.
pub(super) async fn page(request: HttpRequest) -> HttpResponse {
    serve(&request, PAGE)
}

/// `GET /console/{file}`: one of the console's files (the scripts and the style sheet
/// that the page loads); any other name is the JSON 404 of an unknown route.
pub(super) async fn asset(
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let index = FILES
        .iter()
        .position(|(file, _, _)| *file == name.as_str())
        .ok_or(ApiError::RouteNotFound)?;
    Ok(serve(&request, index))
}

fn serve(request: &HttpRequest, index: usize) -> HttpResponse {
    let (_, content_type, body) = FILES[index];
    let etag = &ETAGS[index];
    let cached = request
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag));
    let mut response = if cached {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response
        .insert_header((CONTENT_SECURITY_POLICY, CSP))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .insert_header((ETAG, etag.as_str()));
    if cached {
        response.finish()
    } else {
        response.content_type(content_type).body(body)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::dev::ServiceResponse;
    use actix_web::http::StatusCode;
    use actix_web::http::header::{CONTENT_TYPE, HeaderName};
    use actix_web::{App, test as service};

    use super::*;

    fn header(response: &ServiceResponse, name: HeaderName) -> &str {
        response.headers().get(name).unwrap().to_str().unwrap()
    }

    async fn get(path: &str, if_none_match: Option<&str>) -> ServiceResponse {
        let app = service::init_service(App::new().configure(crate::routes::configure)).await;
        let mut request = service::TestRequest::get().uri(path);
        if let Some(tag) = if_none_match {
            request = request.insert_header((IF_NONE_MATCH, tag));
        }
        service::call_service(&app, request.to_request()).await
    }

    #[actix_web::test]
    async fn the_root_serves_the_page_under_a_strict_policy() {
        let response = get("/", None).await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, CONTENT_SECURITY_POLICY), CSP);
        assert!(CSP.contains("default-src 'none'") && !CSP.contains("unsafe"));
        assert_eq!(header(&response, CONTENT_TYPE), "text/html; charset=utf-8");
        assert_eq!(header(&response, CACHE_CONTROL), "no-cache");
        let page = service::read_body(response).await;
        let page = std::str::from_utf8(&page).unwrap();
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script type=\"module\" src=\"/console/")
                .count(),
            "every script is one of the console's files:\n{page}"
        );
        assert!(!page.contains("style="), "no inline style:\n{page}");
    }

    #[actix_web::test]
    async fn each_file_is_served_with_its_type_and_a_revalidation_gets_a_304() {
        let cases = [
            ("/console/app.js", "text/javascript; charset=utf-8"),
            ("/console/api.js", "text/javascript; charset=utf-8"),
            ("/console/console.css", "text/css; charset=utf-8"),
        ];
        for (path, content_type) in cases {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, CONTENT_TYPE), content_type, "{path}");
            let etag = header(&response, ETAG).to_owned();

            let again = get(path, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert!(service::read_body(again).await.is_empty(), "{path}");
        }
    }

    #[actix_web::test]
    async fn an_unknown_file_is_a_404() {
        for path in ["/console/nope.js", "/console/..%2FCargo.toml", "/console/"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }

    #[test]
    fn the_console_stays_small() {
        let total: usize = FILES.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total < 100 * 1024, "{total} bytes");
    }
}
