//! `GET`/`POST /oauth/userinfo` (OpenID Connect Core §5.3): the signed-in user's claims, as
//! much as the access token's scope allows (`openid` needed; `profile` adds `name`, `email`
//! adds `email` and `email_verified`). The token is checked as at `/v1` (Bearer, or DPoP with
//! a proof); errors are RFC 6750's.

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::auth::Caller;
use super::errors::Problem;
use crate::state::AppState;

pub async fn userinfo(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let has = |scope: &str| caller.claims.scope.split(' ').any(|s| s == scope);
    if !has("openid") {
        return Err(Problem::insufficient_scope("openid"));
    }
    // A deleted user's devices ended with it; one deleted since the token was checked is gone.
    let profile = super::me::profile_of(&state, &caller).await?.ok_or_else(Problem::unauthorized)?;
    let mut claims = json!({ "sub": profile.user.id });
    if has("profile") {
        if let Some(name) = profile.display_name {
            claims["name"] = json!(name);
        }
    }
    if has("email") {
        if let Some(email) = profile.email {
            claims["email"] = json!(email);
            claims["email_verified"] = json!(profile.user.email_verified.unwrap_or(false));
        }
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(claims))
}
