//! HTTP: the route table, body limits, error mapping and the request log.
//! Each route names its handler. A handler parses the request, calls one use case of
//! `service` (a read may call one domain query instead), and answers.

pub mod admin;
pub mod auth;
pub mod authorize;
pub mod crypto;
pub mod dev;
pub mod dpop;
pub mod errors;
pub mod events;
pub mod form_post;
pub mod input;
pub mod introspection;
pub mod logout;
pub mod me;
pub mod oauth;
pub mod openapi;
pub mod ops;
pub mod token_form;
pub mod userinfo;
pub mod wellknown;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::UrlencodedError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::{DefaultHeaders, Next};
use actix_web::{web, HttpRequest, HttpResponse};
use tracing::Instrument;

use crate::state::AppState;
use errors::{OAuthError, Problem};

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every path and the methods it answers. The route table, the `Allow` header of a 405 and
/// the OpenAPI document (`/openapi.json`, checked against this list by a test) agree on it.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/openapi.json", &["GET"]),
    ("/.well-known/openid-configuration", &["GET"]),
    ("/.well-known/jwks.json", &["GET"]),
    ("/oauth/authorize", &["GET"]),
    ("/oauth/authorize/dev", &["POST"]),
    ("/oauth/callback/{provider}", &["GET", "POST"]),
    ("/oauth/token", &["POST"]),
    ("/oauth/nonce", &["POST"]),
    ("/oauth/revoke", &["POST"]),
    ("/oauth/introspect", &["POST"]),
    ("/oauth/logout", &["GET", "POST"]),
    ("/oauth/userinfo", &["GET", "POST"]),
    ("/events/google", &["POST"]),
    ("/events/facebook/deauthorize", &["POST"]),
    ("/events/facebook/data-deletion", &["POST"]),
    ("/events/facebook/data-deletion/{code}", &["GET"]),
    ("/events/apple", &["POST"]),
    ("/v1/me", &["GET", "DELETE"]),
    ("/v1/me/devices", &["GET"]),
    ("/v1/me/devices/{id}", &["DELETE"]),
    ("/v1/me/logout-all", &["POST"]),
    ("/v1/me/identities", &["POST"]),
    ("/v1/me/identities/{provider}", &["DELETE"]),
    ("/v1/crypto/encrypt", &["POST"]),
    ("/v1/crypto/decrypt", &["POST"]),
    ("/v1/crypto/rewrap", &["POST"]),
    ("/v1/crypto/rotate", &["POST"]),
    ("/dev/id-token", &["POST"]),
    ("/admin", &["GET"]),
    ("/admin/login", &["GET"]),
    ("/admin/callback", &["GET"]),
    ("/admin/logout", &["POST"]),
    ("/admin/static/admin.css", &["GET"]),
    ("/admin/users", &["GET"]),
    ("/admin/users/{id}", &["GET"]),
    ("/admin/users/{id}/confirm", &["GET"]),
    ("/admin/users/{id}/devices/{device}/revoke", &["POST"]),
    ("/admin/users/{id}/revoke-all", &["POST"]),
    ("/admin/users/{id}/disable", &["POST"]),
    ("/admin/users/{id}/enable", &["POST"]),
    ("/admin/users/{id}/delete", &["POST"]),
    ("/admin/audit", &["GET"]),
    ("/admin/audit/export", &["GET"]),
    ("/admin/keys", &["GET"]),
    ("/admin/keys/rotate", &["GET", "POST"]),
    ("/admin/clients", &["GET", "POST"]),
    ("/admin/clients/{id}/confirm", &["GET"]),
    ("/admin/clients/{id}/confirm-delete", &["GET"]),
    ("/admin/clients/{id}/created", &["GET"]),
    ("/admin/clients/{id}/disable", &["POST"]),
    ("/admin/clients/{id}/enable", &["POST"]),
    ("/admin/clients/{id}/delete", &["POST"]),
];

/// A path of [`ROUTES`]; any other method on it is answered `405` with `Allow`.
fn resource(path: &'static str) -> actix_web::Resource {
    debug_assert!(ROUTES.iter().any(|(p, _)| p.ends_with(path)), "{path} is missing from ROUTES");
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn routes(cfg: &mut web::ServiceConfig, dev_enabled: bool) {
    let mut oauth_scope = web::scope("/oauth")
        .service(resource("/authorize").route(web::get().to(authorize::authorize)))
        .service(
            resource("/callback/{provider}")
                .route(web::get().to(authorize::callback))
                .route(web::post().to(form_post::apple_callback)),
        )
        .service(resource("/token").route(web::post().to(oauth::token)))
        .service(resource("/nonce").route(web::post().to(oauth::nonce)))
        .service(resource("/revoke").route(web::post().to(introspection::revoke)))
        .service(resource("/introspect").route(web::post().to(introspection::introspect)))
        .service(
            resource("/userinfo")
                .route(web::get().to(userinfo::userinfo_get))
                .route(web::post().to(userinfo::userinfo_post)),
        )
        .service(
            resource("/logout")
                .route(web::get().to(logout::logout_get))
                .route(web::post().to(logout::logout_post)),
        );
    if dev_enabled {
        oauth_scope = oauth_scope.service(resource("/authorize/dev").route(web::post().to(dev::dev_login)));
    }
    cfg.app_data(form_config())
        .app_data(json_config())
        .app_data(query_config())
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .service(resource("/healthz").route(web::get().to(ops::healthz)))
        .service(resource("/readyz").route(web::get().to(ops::readyz)))
        .service(resource("/metrics").route(web::get().to(ops::metrics)))
        .service(resource("/openapi.json").route(web::get().to(ops::openapi)))
        .service(
            resource("/.well-known/openid-configuration")
                .route(web::get().to(wellknown::openid_configuration)),
        )
        .service(resource("/.well-known/jwks.json").route(web::get().to(wellknown::jwks)))
        .service(oauth_scope)
        .service(
            web::scope("/events")
                .service(resource("/google").route(web::post().to(events::google)))
                .service(
                    resource("/facebook/deauthorize").route(web::post().to(events::facebook_deauthorize)),
                )
                .service(
                    resource("/facebook/data-deletion").route(web::post().to(events::facebook_data_deletion)),
                )
                .service(
                    resource("/facebook/data-deletion/{code}").route(web::get().to(events::deletion_status)),
                )
                .service(resource("/apple").route(web::post().to(events::apple))),
        )
        .service(
            web::scope("/v1")
                .wrap(DefaultHeaders::new().add((header::CACHE_CONTROL, "no-store")))
                .service(resource("/me").route(web::get().to(me::me)).route(web::delete().to(me::delete_me)))
                .service(resource("/me/devices").route(web::get().to(me::devices)))
                .service(resource("/me/devices/{id}").route(web::delete().to(me::revoke_device)))
                .service(resource("/me/logout-all").route(web::post().to(me::logout_all)))
                .service(resource("/me/identities").route(web::post().to(me::link_identity)))
                .service(resource("/me/identities/{provider}").route(web::delete().to(me::unlink_identity)))
                .service(resource("/crypto/encrypt").route(web::post().to(crypto::encrypt)))
                .service(resource("/crypto/decrypt").route(web::post().to(crypto::decrypt)))
                .service(resource("/crypto/rewrap").route(web::post().to(crypto::rewrap)))
                .service(resource("/crypto/rotate").route(web::post().to(crypto::rotate))),
        );
    let mut security_headers = DefaultHeaders::new();
    for (name, value) in admin::SECURITY_HEADERS {
        security_headers = security_headers.add((name, value));
    }
    cfg.service(
        web::scope("/admin")
            .wrap(security_headers)
            .service(resource("").route(web::get().to(admin::overview::page)))
            .service(resource("/login").route(web::get().to(admin::session::login)))
            .service(resource("/callback").route(web::get().to(admin::session::callback)))
            .service(resource("/logout").route(web::post().to(admin::session::logout)))
            .service(resource("/static/admin.css").route(web::get().to(admin::stylesheet)))
            .service(resource("/users").route(web::get().to(admin::users::list)))
            .service(resource("/users/{id}").route(web::get().to(admin::users::detail)))
            .service(resource("/users/{id}/confirm").route(web::get().to(admin::users::confirm)))
            .service(
                resource("/users/{id}/devices/{device}/revoke").route(web::post().to(admin::users::change)),
            )
            .service(resource("/users/{id}/revoke-all").route(web::post().to(admin::users::change)))
            .service(resource("/users/{id}/disable").route(web::post().to(admin::users::change)))
            .service(resource("/users/{id}/enable").route(web::post().to(admin::users::change)))
            .service(resource("/users/{id}/delete").route(web::post().to(admin::users::change)))
            .service(resource("/audit").route(web::get().to(admin::audit::log)))
            .service(resource("/audit/export").route(web::get().to(admin::audit::export)))
            .service(resource("/keys").route(web::get().to(admin::keys::list)))
            .service(
                resource("/keys/rotate")
                    .route(web::get().to(admin::keys::confirm_rotate))
                    .route(web::post().to(admin::keys::rotate)),
            )
            .service(
                resource("/clients")
                    .route(web::get().to(admin::clients::list))
                    .route(web::post().to(admin::clients::create)),
            )
            .service(resource("/clients/{id}/confirm").route(web::get().to(admin::clients::confirm)))
            .service(
                resource("/clients/{id}/confirm-delete").route(web::get().to(admin::clients::confirm_delete)),
            )
            .service(resource("/clients/{id}/created").route(web::get().to(admin::clients::created)))
            .service(resource("/clients/{id}/disable").route(web::post().to(admin::clients::change)))
            .service(resource("/clients/{id}/enable").route(web::post().to(admin::clients::change)))
            .service(resource("/clients/{id}/delete").route(web::post().to(admin::clients::change))),
    );
    if dev_enabled {
        cfg.service(resource("/dev/id-token").route(web::post().to(dev::id_token)));
    }
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, Problem> {
    Err(Problem::not_found("no such endpoint"))
}

/// 405 with the methods the path answers; in RFC 6749's shape under `/oauth`.
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let pattern = req.match_pattern().unwrap_or_default();
    let allow = ROUTES.iter().find(|(p, _)| *p == pattern).map(|(_, m)| m.join(", ")).unwrap_or_default();
    let mut response = if pattern.starts_with("/oauth/") {
        actix_web::ResponseError::error_response(&OAuthError::method_not_allowed())
    } else {
        actix_web::ResponseError::error_response(&Problem::method_not_allowed())
    };
    if let Ok(value) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}

/// JSON bodies (`/v1/crypto`): 413 past the limit, else a problem+json 400 naming the fault.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, _req| {
        let problem = match err {
            actix_web::error::JsonPayloadError::OverflowKnownLength { .. }
            | actix_web::error::JsonPayloadError::Overflow { .. } => Problem::payload_too_large(),
            actix_web::error::JsonPayloadError::ContentType => {
                Problem::bad_request("the body must be application/json")
            }
            other => Problem::bad_request(format!("the JSON body is malformed: {other}")),
        };
        problem.into()
    })
}

/// Query strings (`?limit`, `?cursor`): a malformed one is a problem+json 400.
fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|_, _req| {
        Problem::bad_request("the query string is malformed or repeats a parameter").into()
    })
}

/// Form bodies: RFC 6749's error shape under `/oauth`, problem+json elsewhere (`/v1`).
fn form_config() -> web::FormConfig {
    web::FormConfig::default().limit(MAX_BODY_BYTES).error_handler(|err, req| {
        let (too_large, detail) = match err {
            UrlencodedError::Overflow { .. } => (true, "the request body is larger than 64 KiB"),
            UrlencodedError::ContentType => (false, "the body must be application/x-www-form-urlencoded"),
            _ => (false, "the form body is malformed or repeats a parameter"),
        };
        if req.path().starts_with("/oauth/") {
            let answer =
                if too_large { OAuthError::payload_too_large() } else { OAuthError::invalid_request(detail) };
            answer.into()
        } else if too_large {
            Problem::payload_too_large().into()
        } else {
            Problem::bad_request(detail).into()
        }
    })
}

/// One line per request: method, route pattern (never the raw path or query), status,
/// latency and a request id, which is also returned as `x-request-id`.
pub async fn log_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().clone();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let span = tracing::info_span!("request", request_id = %request_id);
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let route = response.request().match_pattern().unwrap_or_else(|| "(unmatched)".to_string());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let latency_us = elapsed.as_micros() as u64;
    span.in_scope(|| tracing::info!(%method, %route, status, latency_us, "request"));
    if let Some(state) = state {
        state.metrics.observe_request(&route, method.as_str(), status, elapsed.as_secs_f64());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(HeaderName::from_static("x-request-id"), value);
    }
    Ok(response)
}
