//! Request authentication: client credentials (HTTP Basic or form) at `/oauth`, and the
//! Bearer access token at `/v1`.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::SecretString;

use super::errors::{OAuthError, Problem};
use crate::accounts::{self, audit::Origin};
use crate::app::AppState;
use crate::clients::{Client, ClientCredentials};
use crate::tokens::access::{self, AccessClaims};

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| OAuthError::invalid_client())?;
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return Ok(None);
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| OAuthError::invalid_client())?;
    let decoded = String::from_utf8(decoded).map_err(|_| OAuthError::invalid_client())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(OAuthError::invalid_client)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

/// The client's credentials from Basic or from the form; both at once is refused (RFC 6749 §2.3).
fn client_credentials(
    req: &HttpRequest,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    match basic_credentials(req)? {
        Some((id, secret)) => {
            if form_secret.is_some() || form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request("use one client authentication method"));
            }
            Ok(ClientCredentials { client_id: id, secret: Some(SecretString::from(secret)) })
        }
        None => {
            let id = form_id.filter(|s| !s.is_empty()).ok_or_else(OAuthError::invalid_client)?;
            Ok(ClientCredentials {
                client_id: id.to_string(),
                secret: form_secret.map(|s| SecretString::from(s.to_string())),
            })
        }
    }
}

/// The authenticated client of an `/oauth` request, or `401 invalid_client`.
pub async fn authenticate_client(
    state: &AppState,
    req: &HttpRequest,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<std::sync::Arc<Client>, OAuthError> {
    let credentials = client_credentials(req, form_id, form_secret)?;
    state.clients.authenticate(credentials).await.map_err(|_| OAuthError::invalid_client())
}

/// Peer address and user agent, as recorded on devices and audit events.
pub fn origin(req: &HttpRequest) -> Origin {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    Origin { ip: req.peer_addr().map(|a| a.ip().to_string()), user_agent }
}

/// The caller of a `/v1` endpoint: a valid access token of a device that is still live.
pub struct Caller {
    pub claims: AccessClaims,
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_string());
        Box::pin(async move {
            let state = state.ok_or_else(Problem::internal)?;
            let token = token.ok_or_else(Problem::unauthorized)?;
            let now = crate::db::now();
            let claims = access::verify(&state.keys, &state.access_policy, &token, now)
                .map_err(|_| Problem::unauthorized())?;
            let device_id = claims.sid.clone();
            let live = state.db.run(move |conn| accounts::is_device_live(conn, &device_id, now)).await?;
            if !live {
                return Err(Problem::unauthorized());
            }
            Ok(Caller { claims })
        })
    }
}
