//! `GET /healthz`: unauthenticated liveness check that the database answers.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::db::Db;
use crate::error::ApiError;

/// 200 `{"status":"ok"}` when the database answers a trivial query, 503 otherwise.
pub async fn healthz(db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    db.ping().await.map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ok" })))
}
