//! `GET`/`POST /oauth/userinfo` (OpenID Connect Core §5.3): the signed-in user's claims, as
//! much as the access token's scope allows (`openid` needed; `profile` adds `name`, `email`
//! adds `email` and `email_verified`). The token is checked as at `/v1` (Bearer, or DPoP with
//! a proof); errors are RFC 6750's.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use super::auth::Caller;
use super::errors::Problem;
use crate::state::AppState;

/// UserInfo (OpenID Connect Core §5.3)
///
/// The claims the access token's scope allows: `sub`; `name` with `profile`; `email` and
/// `email_verified` with `email`.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "oauth", operation_id = "userinfo_get",
    security(("bearer" = []), ("dpop" = [])),
    responses((status = 200, description = "The claims (`Cache-Control: no-store`)", body = UserInfo),
        (status = 403, description = "The token lacks scope `openid`", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        super::openapi::answers::ResourceErrors))]
pub async fn userinfo_get(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    userinfo(state, caller).await
}

/// UserInfo, by POST (OpenID Connect Core §5.3)
///
/// As the GET; the token comes in the `Authorization` header.
#[utoipa::path(post, path = "/oauth/userinfo", tag = "oauth", operation_id = "userinfo_post",
    security(("bearer" = []), ("dpop" = [])),
    responses((status = 200, description = "The claims (`Cache-Control: no-store`)", body = UserInfo),
        (status = 403, description = "The token lacks scope `openid`", body = super::errors::ProblemBody, content_type = "application/problem+json"),
        super::openapi::answers::ResourceErrors))]
pub async fn userinfo_post(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    userinfo(state, caller).await
}

/// The UserInfo answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct UserInfo {
    /// The user id, as the access and ID tokens' `sub`.
    #[schema(format = Uuid)]
    sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    email_verified: Option<bool>,
}

async fn userinfo(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    let has = |scope: &str| caller.claims.scope.split(' ').any(|s| s == scope);
    if !has("openid") {
        return Err(Problem::insufficient_scope("openid"));
    }
    // A deleted user's devices ended with it; one deleted since the token was checked is gone.
    let profile = super::me::profile_of(&state, &caller).await?.ok_or_else(Problem::unauthorized)?;
    let email = profile.email.filter(|_| has("email"));
    let claims = UserInfo {
        sub: profile.user.id.to_string(),
        name: profile.display_name.filter(|_| has("profile")),
        email_verified: email.as_ref().map(|_| profile.user.email_verified.unwrap_or(false)),
        email,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(claims))
}
