//! Operations: liveness, readiness, Prometheus metrics and the OpenAPI document.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// The HTTP API's reference, kept in the repository and served as it is.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when the database answers and takes writes and the signing keys are loaded; decided
/// within a second whatever the database does (a stalled one counts as not ready).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let database = state.db.ready().await;
    let keys = state.keys.is_loaded();
    if database.answers && database.writes && keys {
        HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({
                "status": "unavailable",
                "database": database.answers,
                "writes": database.writes,
                "keys": keys,
            }))
    }
}

/// Prometheus text format; the pool and signing-key gauges are read at scrape time.
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

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .content_type("application/json")
        .body(OPENAPI_JSON)
}
