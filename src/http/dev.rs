//! `/dev/id-token` (dev mode only): an ID token from the dev provider, for trying the flow with curl.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::errors::OAuthError;
use super::input;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct DevTokenForm {
    name: Option<String>,
    nonce: Option<String>,
}

pub async fn id_token(
    state: web::Data<AppState>,
    form: web::Form<DevTokenForm>,
) -> Result<HttpResponse, OAuthError> {
    let dev = state.providers.dev.as_ref().ok_or_else(|| OAuthError::invalid_request("dev mode is off"))?;
    let name = input::text("name", form.name.as_deref().map(str::trim), 256)?.unwrap_or("");
    if name.is_empty() || name.chars().count() > 64 {
        return Err(OAuthError::invalid_request("name is required (at most 64 characters)"));
    }
    let nonce = input::text("nonce", form.nonce.as_deref(), 256)?;
    let token = dev.mint(name, nonce).map_err(|_| OAuthError::server_error())?;
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "id_token": token })))
}
