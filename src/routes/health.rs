//! `GET /healthz`: unauthenticated liveness check that the database answers.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::Db;
use crate::error::ApiError;
use crate::routes::schema::ErrorBody;

/// `{"status": "ok"}`
#[derive(Serialize, ToSchema)]
pub(super) struct Health {
    /// Always `"ok"`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// 200 `{"status":"ok"}` when the database answers a trivial query, 503 otherwise.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer", body = ErrorBody),
    )
)]
pub(super) async fn healthz(db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    db.ping().await.map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(Health { status: "ok" }))
}

/// `{"status": "ready"}`
#[derive(Serialize, ToSchema)]
pub(super) struct Ready {
    /// Always `"ready"`.
    #[schema(example = "ready")]
    status: &'static str,
}

/// 200 `{"status":"ready"}` when the database takes writes and has the expected schema,
/// 503 otherwise. Cheap: one lock taken and released on the writer.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Ready),
        (status = 503, description = "The database cannot take writes", body = ErrorBody),
    )
)]
pub(super) async fn readyz(db: web::Data<Db>) -> Result<HttpResponse, ApiError> {
    db.ready().await.map_err(ApiError::Unavailable)?;
    Ok(HttpResponse::Ok().json(Ready { status: "ready" }))
}
