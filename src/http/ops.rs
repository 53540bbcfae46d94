//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::state::AppState;

/// Liveness
///
/// `200` while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = Status)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Status { status: "ok", ..Status::default() })
}

/// The state of the process or of its readiness.
#[derive(serde::Serialize, utoipa::ToSchema, Default)]
pub struct Status {
    /// `ok`, `ready` or `unavailable`
    status: &'static str,
    /// `/readyz` when unavailable: whether the database answers
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    database: Option<bool>,
    /// `/readyz` when unavailable: whether it takes writes
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    writes: Option<bool>,
    /// `/readyz` when unavailable: whether the signing keys are loaded
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    keys: Option<bool>,
}

/// Readiness
///
/// Ready when the database answers and takes writes and the signing keys are loaded; decided
/// within a second whatever the database does (a stalled one counts as not ready).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Status),
        (status = 503, description = "Not ready", body = Status, headers(("Retry-After" = i64, description = "seconds")))))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.db.ready().await;
    let keys = state.keys.is_loaded();
    if database.answers && database.writes && keys {
        HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(Status { status: "ready", ..Status::default() })
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(Status {
                status: "unavailable",
                database: Some(database.answers),
                writes: Some(database.writes),
                keys: Some(keys),
            })
    }
}

/// Prometheus metrics
///
/// Prometheus text format 0.0.4; the pool and signing-key gauges are read at scrape time.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "The metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (connections, idle) = state.db.pool_state();
    let pool = &state.metrics.db_pool_connections;
    pool.with_label_values(&["idle"]).set(i64::from(idle));
    pool.with_label_values(&["in_use"]).set(i64::from(connections.saturating_sub(idle)));
    let now = crate::clock::now();
    if let Some(key) = state.keys.current(now) {
        state.metrics.signing_key_age.set(now - key.activates_at);
    }
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(state.metrics.render())
}

/// This document
///
/// OpenAPI 3.1, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(super::openapi::document(&state).to_string())
}
