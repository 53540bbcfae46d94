//! `/oauth/revoke` (RFC 7009) and `/oauth/introspect` (RFC 7662), for a client's own tokens.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::{authenticate_client, check_access_token, origin};
use super::errors::OAuthError;
use super::input;
use super::oauth::no_store;
use super::openapi::answers::OAuthErrors;
use super::token_form::MAX_TOKEN_LEN;
use crate::audit::Actor;
use crate::clients::ClientKind;
use crate::service::{self, Requester};
use crate::state::AppState;
use crate::tokens::access;

/// An introspection answer: only `active` for a token that is not live.
#[derive(Serialize, Default, utoipa::ToSchema)]
pub struct Introspection {
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    client_id: Option<String>,
    /// The device
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = Uuid)]
    sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    aud: Option<String>,
    /// `Bearer`, `DPoP` or `refresh_token`
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, value_type = Option<String>, pattern = "^(Bearer|DPoP|refresh_token)$")]
    token_type: Option<&'static str>,
    /// The provider the user signed in with
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    idp: Option<String>,
    /// The DPoP key a bound token is held by
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    cnf: Option<Confirmation>,
}

/// RFC 7800 confirmation: the SHA-256 JWK thumbprint of the DPoP key.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Confirmation {
    jkt: String,
}

/// The form of revocation and introspection.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct TokenOnlyForm {
    /// An access or refresh token
    #[schema(required = true, min_length = 1)]
    token: Option<String>,
    /// Accepted and not needed: the token's shape tells its type
    #[allow(dead_code)] // accepted per RFC 7009/7662; the token's shape tells its type
    token_type_hint: Option<String>,
    /// A public client's id, or a confidential one's when it does not use HTTP Basic (with Basic, the same id or none)
    client_id: Option<String>,
    /// A confidential client's secret, when it does not use HTTP Basic (never both: RFC 6749 §2.3)
    client_secret: Option<String>,
}

/// The client, authenticated, and a form that names a token (both RFCs require `token`).
async fn client_and_token(
    state: &AppState,
    req: &HttpRequest,
    form: TokenOnlyForm,
) -> Result<(std::sync::Arc<crate::clients::Client>, TokenOnlyForm), OAuthError> {
    let client =
        authenticate_client(state, req, form.client_id.as_deref(), form.client_secret.as_deref()).await?;
    if form.token.as_deref().is_none_or(str::is_empty) {
        return Err(OAuthError::invalid_request("token is required"));
    }
    Ok((client, form))
}

/// Revocation (RFC 7009)
///
/// `200` whatever the token was; a token of this client ends its whole device.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    security((), ("basic" = [])),
    responses((status = 200, description = "Done, or the token was not one of this client's live ones (`Cache-Control: no-store`)"),
        OAuthErrors))]
pub async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<TokenOnlyForm>,
) -> Result<HttpResponse, OAuthError> {
    let (client, form) = client_and_token(&state, &req, form.into_inner()).await?;
    // A malformed token is like an unknown one: 200, nothing changes (RFC 7009 §2.2).
    let Ok(Some(token)) = input::text("token", form.token.as_deref(), MAX_TOKEN_LEN) else {
        return Ok(no_store().finish());
    };
    let token = token.to_string();
    let now = crate::clock::now();
    let access_device = if access::looks_like_jwt(&token) {
        access::verify(&state.keys, &state.access_policy, &token, now)
            .ok()
            .filter(|c| c.client_id == client.id)
            .map(|c| c.sid)
    } else {
        None
    };
    let presented = match access_device {
        Some(device_id) => service::devices::Presented::DeviceOfAccessToken(device_id),
        None => service::devices::Presented::Other(token),
    };
    let by = Requester::new(Actor::Client(client.id.clone()), origin(&req));
    service::devices::revoke_token(&state.db, &client.id, presented, &by).await?;
    Ok(no_store().finish())
}

/// Introspection (RFC 7662)
///
/// For confidential clients: `{"active": false}` for anything not live.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenOnlyForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = [])),
    responses((status = 200, description = "What the token is (`Cache-Control: no-store`)", body = Introspection),
        OAuthErrors))]
pub async fn introspect(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<TokenOnlyForm>,
) -> Result<HttpResponse, OAuthError> {
    let (client, form) = client_and_token(&state, &req, form.into_inner()).await?;
    if client.kind != ClientKind::Confidential {
        return Err(OAuthError::invalid_client());
    }
    let inactive = || Ok(no_store().json(Introspection::default()));
    let Ok(Some(token)) = input::text("token", form.token.as_deref(), MAX_TOKEN_LEN) else {
        return inactive();
    };
    if access::looks_like_jwt(token) {
        let Some(claims) = check_access_token(&state, token).await? else {
            return inactive();
        };
        let body = Introspection {
            active: true,
            cnf: claims.jkt().map(|jkt| Confirmation { jkt: jkt.to_string() }),
            token_type: Some(claims.token_type()),
            sub: Some(claims.sub),
            client_id: Some(claims.client_id),
            sid: Some(claims.sid),
            scope: Some(claims.scope),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            iss: Some(claims.iss),
            aud: Some(claims.aud),
            idp: Some(claims.idp),
        };
        return Ok(no_store().json(body));
    }
    let now = crate::clock::now();
    let token = token.to_string();
    let Some((device, issued_at, expires_at)) =
        state.db.run(move |conn| crate::sessions::refresh::find_live(conn, &token, now)).await?
    else {
        return inactive();
    };
    // A device of a client removed from the configuration is not live; its scope is what the
    // client may still grant.
    let Some(owner) = state.clients.get(&device.client_id) else {
        return inactive();
    };
    let body = Introspection {
        active: true,
        scope: Some(owner.current_scope(&device.scope)),
        cnf: device.dpop_jkt.map(|jkt| Confirmation { jkt }),
        sub: Some(device.user_id.to_string()),
        client_id: Some(device.client_id),
        sid: Some(device.id.to_string()),
        exp: Some(expires_at),
        iat: Some(issued_at),
        iss: Some(state.access_policy.issuer.clone()),
        aud: Some(state.access_policy.audience.clone()),
        token_type: Some("refresh_token"),
        idp: Some(device.idp),
    };
    Ok(no_store().json(body))
}
