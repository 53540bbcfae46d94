//! Discovery (`/.well-known/openid-configuration`) and the JWKS.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::crypto::signing::JWKS_MAX_AGE_SECS;
use crate::state::AppState;

/// Discovery (RFC 8414, OpenID Connect Discovery 1.0)
///
/// Lists only endpoints and grants that exist.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "The discovery document (`Cache-Control: public, max-age=300`)", body = Object)))]
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuer = state.settings.issuer();
    let clients = state.clients.all();
    let mut scopes: Vec<&str> = clients.iter().flat_map(|c| c.scopes.iter().map(String::as_str)).collect();
    scopes.sort_unstable();
    scopes.dedup();
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "public, max-age=300")).json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "end_session_endpoint": format!("{issuer}/oauth/logout"),
        "userinfo_endpoint": format!("{issuer}/oauth/userinfo"),
        "grant_types_supported": [
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "refresh_token",
            "authorization_code",
        ],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [format!("{:?}", state.settings.keys.access_token_alg)],
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "dpop_signing_alg_values_supported": crate::tokens::dpop::ALGORITHMS,
    }))
}

/// The signing keys (RFC 7517)
///
/// Every public key that can verify a live access token.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "The JWK Set (`Cache-Control: public, max-age=300`)", body = Jwks)))]
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECS}")))
        .json(state.keys.jwks(crate::clock::now()))
}

/// A JWK Set.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // describes the answer the key store serialises
pub struct Jwks {
    /// Public JWKs with `kid`, `alg` and `use` `sig`
    keys: Vec<serde_json::Map<String, serde_json::Value>>,
}
