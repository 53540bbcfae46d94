//! Dev mode only: `/dev/id-token`, an ID token from the dev provider for trying the flow with
//! curl, and `/oauth/authorize/dev`, the dev provider's form in the browser flow.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::authorize::{error_page, finish, take_login};
use super::errors::OAuthError;
use super::input;
use crate::providers::{ProviderKind, VerifiedAssertion};
use crate::state::AppState;
use crate::tokens::codes;

/// A dev name as both forms take it: 1 to 64 characters without control characters, trimmed,
/// not all whitespace.
fn dev_name(value: Option<&str>) -> Option<&str> {
    input::text("name", value, 64).ok().flatten().map(str::trim).filter(|n| !n.is_empty())
}

/// What the dev provider's ID token says.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DevTokenForm {
    /// The token's subject and name: 1 to 64 characters, not all spaces
    #[schema(
        required = true,
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: Option<String>,
    /// The `nonce` claim
    #[schema(max_length = 256, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    nonce: Option<String>,
}

/// An ID token of the dev provider.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DevIdToken {
    id_token: String,
}

/// A dev provider's ID token
///
/// Dev mode only: an ID token for `name`, accepted by token exchange.
#[utoipa::path(post, path = "/dev/id-token", tag = "dev",
    request_body(content = DevTokenForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The ID token (`Cache-Control: no-store`)", body = DevIdToken),
        (status = 400, description = "A missing or bad `name` or `nonce`", body = super::errors::OAuthErrorBody),
        (status = 413, description = "Body over 64 KiB", body = super::errors::OAuthErrorBody)))]
pub async fn id_token(
    state: web::Data<AppState>,
    form: web::Form<DevTokenForm>,
) -> Result<HttpResponse, OAuthError> {
    let dev = state.providers.dev.as_ref().ok_or_else(|| OAuthError::invalid_request("dev mode is off"))?;
    let name = dev_name(form.name.as_deref())
        .ok_or_else(|| OAuthError::invalid_request("name is required (at most 64 characters)"))?;
    let nonce = input::text("nonce", form.nonce.as_deref(), 256)?;
    let token = dev.mint(name, nonce).map_err(|_| OAuthError::server_error())?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(DevIdToken { id_token: token }))
}

/// The dev provider's form.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct DevLoginForm {
    /// The login in flight
    #[schema(required = true, min_length = 1)]
    login: Option<String>,
    /// Who to sign in as: 1 to 64 characters, not all spaces
    #[schema(
        required = true,
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: Option<String>,
}

/// The dev provider's form
///
/// Dev mode only: signs in whoever is named.
#[utoipa::path(post, path = "/oauth/authorize/dev", tag = "dev",
    request_body(content = DevLoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(super::openapi::answers::BrowserAnswers))]
pub async fn dev_login(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<DevLoginForm>,
) -> HttpResponse {
    let login = match take_login(&state, &req, form.login.as_deref()).await {
        Ok(login) if login.provider == ProviderKind::Dev.as_str() => login,
        Ok(_) => return error_page(StatusCode::BAD_REQUEST, "This sign-in was begun with another provider."),
        Err(page) => return page,
    };
    let name = match dev_name(form.name.as_deref()) {
        Some(name) => name.to_string(),
        None => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "A name of 1 to 64 characters is needed. Start again from the app.",
            )
        }
    };
    let assertion = VerifiedAssertion {
        provider: ProviderKind::Dev,
        subject: name.clone(),
        email: None,
        email_verified: None,
        name: Some(name),
        nonce: None,
        assertion_hash: None,
        expires_at: crate::clock::now() + codes::CODE_TTL_SECS,
        audience: None,
        upstream: None,
    };
    finish(&state, login, assertion).await
}
