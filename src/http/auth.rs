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

use super::dpop::{self, ProofHeaders};
use super::errors::{OAuthError, Problem};
use crate::audit::{Actor, AuditAction, AuditEvent, Origin};
use crate::clients::{Client, ClientAuthError, ClientCredentials, ClientKind};
use crate::db::DbError;
use crate::state::AppState;
use crate::tokens::access::{self, AccessClaims};

/// The credentials of an `Authorization` header with `scheme`, matched case-insensitively
/// (RFC 7235 §2.1); `None` when the header is absent or has another scheme.
fn authorization<'a>(req: &'a HttpRequest, scheme: &str) -> Option<&'a str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.trim_start();
    let (given, credentials) = value.split_once(' ').unwrap_or((value, ""));
    given.eq_ignore_ascii_case(scheme).then(|| credentials.trim())
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(encoded) = authorization(req, "Basic") else {
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
    let (id, secret) = (unescape(id), unescape(secret));
    if id.len() > 128 || id.contains(char::is_control) || secret.len() > 512 {
        return Err(OAuthError::invalid_client());
    }
    Ok(Some((id, secret)))
}

/// The client's credentials from Basic or from the form; both at once is refused (RFC 6749 §2.3).
fn client_credentials(
    req: &HttpRequest,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<ClientCredentials, OAuthError> {
    // RFC 6749 §3.1: a parameter sent without a value is as if omitted.
    let (form_id, form_secret) = (form_id.filter(|f| !f.is_empty()), form_secret.filter(|f| !f.is_empty()));
    match basic_credentials(req)? {
        Some((id, secret)) => {
            if form_secret.is_some() || form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request("use one client authentication method"));
            }
            Ok(ClientCredentials { client_id: id, secret: Some(SecretString::from(secret)) })
        }
        None => {
            let id = form_id.filter(|s| !s.is_empty()).ok_or_else(OAuthError::invalid_client)?;
            if id.len() > 128 || id.contains(char::is_control) || form_secret.is_some_and(|s| s.len() > 512) {
                return Err(OAuthError::invalid_client());
            }
            Ok(ClientCredentials {
                client_id: id.to_string(),
                secret: form_secret.map(|s| SecretString::from(s.to_string())),
            })
        }
    }
}

/// The authenticated client of an `/oauth` request, or `401 invalid_client`.
///
/// Rate limits: requests of public clients and failed authentications count against the peer
/// address; an authenticated confidential client counts against itself only, so neither a
/// busy address (a NAT) nor someone quoting a public client id can exhaust another's budget.
pub async fn authenticate_client(
    state: &AppState,
    req: &HttpRequest,
    form_id: Option<&str>,
    form_secret: Option<&str>,
) -> Result<std::sync::Arc<Client>, OAuthError> {
    let ip = req.peer_addr().map(|a| a.ip());
    let credentials = match client_credentials(req, form_id, form_secret) {
        Ok(credentials) => credentials,
        Err(e) => {
            state.rate_limits.check_ip(ip, &state.metrics)?;
            return Err(e);
        }
    };
    match authenticate_counted(state, ip, credentials).await? {
        Ok(client) if client.kind == ClientKind::Public => {
            state.rate_limits.check_ip(ip, &state.metrics)?;
            Ok(client)
        }
        Ok(client) => {
            state.rate_limits.check_client(&client.id, &state.metrics)?;
            Ok(client)
        }
        Err(ClientAuthError::Failed) => Err(OAuthError::invalid_client()),
        Err(e @ ClientAuthError::Busy) => Err(OAuthError::temporarily_unavailable(e.to_string())),
    }
}

/// Client authentication with the address's budget spent where it must be: before a slow
/// (argon2) check runs, and for every failed or busy attempt. The outer `Err` is `429`; a flood
/// of wrong secrets from one address is refused before it costs more than a digest each.
async fn authenticate_counted(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    credentials: ClientCredentials,
) -> Result<Result<std::sync::Arc<Client>, ClientAuthError>, OAuthError> {
    let slow = state.clients.needs_slow_check(&credentials);
    if slow {
        state.rate_limits.check_ip(ip, &state.metrics)?;
    }
    let secret = slow.then(|| credentials.secret.clone()).flatten();
    let outcome = state.clients.authenticate(credentials).await;
    match &outcome {
        // Counted once: a slow check was counted before it ran.
        Err(_) if !slow => state.rate_limits.check_ip(ip, &state.metrics)?,
        Ok(client) => {
            if let (Some(secret), Some(old_hash)) = (secret, state.clients.stored_argon2_hash(&client.id)) {
                upgrade_stored_secret(state, client.id.clone(), old_hash, secret).await;
            }
        }
        Err(_) => {}
    }
    Ok(outcome)
}

/// A console client whose secret is still an argon2 hash (made before SHA-256) gets the
/// SHA-256 `secret_hash` of the secret that just proved itself. Best effort: a failure is
/// logged, and the next successful check tries again.
async fn upgrade_stored_secret(state: &AppState, client_id: String, old_hash: String, secret: SecretString) {
    use secrecy::ExposeSecret;
    let upgraded = state
        .db
        .write(move |conn| {
            crate::clients::upgrade_stored_secret(conn, &client_id, &old_hash, secret.expose_secret())
        })
        .await;
    match upgraded {
        Ok(true) => {
            let registry = state.clients.clone();
            if let Err(e) = state.db.run(move |conn| registry.reload_stored(conn)).await {
                tracing::warn!(error = %e, "cannot reload stored clients");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "cannot store a client's secret as SHA-256"),
    }
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

/// The caller of a `/v1` endpoint: a valid access token of a device that is still live, of a
/// user who is not disabled. `claims.scope` is already narrowed to the client's scopes now.
pub struct Caller {
    pub claims: AccessClaims,
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = PresentedToken::of(req);
        let proofs = ProofHeaders::of(req);
        Box::pin(async move {
            let state = state.ok_or_else(Problem::internal)?;
            let token = token.ok_or_else(Problem::unauthenticated)?;
            let claims = authenticate_token(&state, token, &proofs).await?;
            Ok(Caller { claims })
        })
    }
}

/// The access token of a resource request, and the scheme it came with (RFC 6750, RFC 9449 §7).
pub enum PresentedToken {
    Bearer(String),
    Dpop(String),
}

impl PresentedToken {
    pub fn of(req: &HttpRequest) -> Option<Self> {
        if let Some(token) = authorization(req, "Bearer") {
            return Some(PresentedToken::Bearer(token.to_string()));
        }
        authorization(req, "DPoP").map(|token| PresentedToken::Dpop(token.to_string()))
    }
}

/// A resource request's access token, live, and sent as it must be: an unbound token as
/// `Bearer`; a DPoP-bound one (`cnf.jkt`) as `DPoP`, with a proof of this request (`htm`,
/// `htu`, `ath`) by the key it is bound to, never seen before. Refusals are `401` with the
/// challenge of the scheme used.
pub async fn authenticate_token(
    state: &AppState,
    token: PresentedToken,
    proofs: &ProofHeaders,
) -> Result<AccessClaims, Problem> {
    match token {
        PresentedToken::Bearer(token) => {
            let claims = check_access_token(state, &token).await?.ok_or_else(Problem::unauthorized)?;
            if claims.cnf.is_some() {
                return Err(Problem::dpop_refused(
                    "invalid_token",
                    "a DPoP-bound access token is sent with the DPoP scheme and a proof",
                ));
            }
            Ok(claims)
        }
        PresentedToken::Dpop(token) => {
            let claims = check_access_token(state, &token).await?.ok_or_else(|| {
                Problem::dpop_refused("invalid_token", "the access token is invalid, expired or revoked")
            })?;
            let Some(jkt) = claims.jkt().map(str::to_string) else {
                return Err(Problem::dpop_refused(
                    "invalid_token",
                    "the access token is not DPoP-bound; send it with the Bearer scheme",
                ));
            };
            let Some(proof) = dpop::check(state, proofs, Some(&token))? else {
                return Err(Problem::dpop_refused(
                    "invalid_dpop_proof",
                    "the DPoP scheme needs a DPoP proof",
                ));
            };
            if proof.jkt != jkt {
                return Err(Problem::dpop_refused(
                    "invalid_dpop_proof",
                    "the DPoP proof is not by the key the access token is bound to",
                ));
            }
            Ok(claims)
        }
    }
}

/// An access token's claims when it is valid and live now: signature, `typ`, `iss`, `aud`,
/// `exp`; a client that still exists; a live device of a user who is not disabled. The scope is
/// narrowed to the client's scopes now. `None` for any token that is not live.
pub async fn check_access_token(state: &AppState, token: &str) -> Result<Option<AccessClaims>, DbError> {
    let now = crate::clock::now();
    let Ok(mut claims) = access::verify(&state.keys, &state.access_policy, token, now) else {
        return Ok(None);
    };
    let Some(client) = state.clients.get(&claims.client_id) else {
        return Ok(None);
    };
    claims.scope = client.current_scope(&claims.scope);
    // From memory: the devices revoked within an access token's lifetime (`sessions::liveness`).
    Ok((!state.liveness.is_revoked(&claims.sid)).then_some(claims))
}

/// The caller of `/v1/crypto`: a user with their own access token, or a confidential client
/// granted scope `crypto` (HTTP Basic) acting for the user it names.
pub enum CryptoCaller {
    User { user_id: String },
    Service { client_id: String },
}

impl CryptoCaller {
    /// The user whose keys the call uses: the token's user (a different `user_id` is 403), or
    /// for a service the `user_id` it names (required). A named id is parsed once, in any UUID
    /// spelling (upper case, braces, no hyphens), and used in its canonical form; a malformed one
    /// is 400.
    pub fn user_id(&self, named: Option<&str>) -> Result<String, Problem> {
        let named = named
            .map(|n| {
                crate::ids::UserId::parse(n)
                    .map(|id| id.to_string())
                    .ok_or_else(|| Problem::bad_request("user_id is not a user id"))
            })
            .transpose()?;
        match (self, named) {
            (CryptoCaller::User { user_id }, None) => Ok(user_id.clone()),
            (CryptoCaller::User { user_id }, Some(named)) if &named == user_id => Ok(named),
            (CryptoCaller::User { .. }, Some(_)) => {
                Err(Problem::forbidden("a user's token reaches only that user's keys"))
            }
            (CryptoCaller::Service { .. }, Some(named)) => Ok(named),
            (CryptoCaller::Service { .. }, None) => {
                Err(Problem::bad_request("a service names the user in user_id"))
            }
        }
    }

    /// Who the audit trail names.
    pub fn actor(&self) -> crate::audit::Actor {
        match self {
            CryptoCaller::User { user_id } => crate::audit::Actor::User(user_id.clone()),
            CryptoCaller::Service { client_id } => crate::audit::Actor::Client(client_id.clone()),
        }
    }
}

/// The scope a confidential client needs for `/v1/crypto`.
pub const CRYPTO_SCOPE: &str = "crypto";
/// The scope a user's access token needs for `/v1/crypto`.
pub const API_SCOPE: &str = "api";

impl FromRequest for CryptoCaller {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = PresentedToken::of(req);
        let proofs = ProofHeaders::of(req);
        let basic = basic_credentials(req);
        let ip = req.peer_addr().map(|a| a.ip());
        let origin = origin(req);
        let path = req.path().to_string();
        Box::pin(async move {
            let state = state.ok_or_else(Problem::internal)?;
            if let Some(token) = token {
                let claims = authenticate_token(&state, token, &proofs).await?;
                if !claims.scope.split(' ').any(|s| s == API_SCOPE) {
                    return Err(Problem::insufficient_scope(API_SCOPE));
                }
                return Ok(CryptoCaller::User { user_id: claims.sub });
            }
            let Ok(Some((client_id, secret))) = basic else {
                return Err(Problem::unauthenticated());
            };
            let credentials = ClientCredentials { client_id, secret: Some(SecretString::from(secret)) };
            let outcome = authenticate_counted(&state, ip, credentials)
                .await
                .map_err(|_| Problem::too_many_requests())?;
            let client = match outcome {
                Ok(client) if client.kind == ClientKind::Confidential => client,
                Ok(_) => {
                    // A public client has no secret to prove: counted as a failure.
                    state
                        .rate_limits
                        .check_ip(ip, &state.metrics)
                        .map_err(|_| Problem::too_many_requests())?;
                    return Err(Problem::unauthorized_client());
                }
                Err(ClientAuthError::Failed) => return Err(Problem::unauthorized_client()),
                Err(ClientAuthError::Busy) => return Err(Problem::unavailable()),
            };
            state
                .rate_limits
                .check_client(&client.id, &state.metrics)
                .map_err(|_| Problem::too_many_requests())?;
            if !client.scopes.iter().any(|s| s == CRYPTO_SCOPE) {
                let detail = format!("{path}: this client is not granted scope crypto");
                let actor = Actor::Client(client.id.clone());
                let audited = state
                    .db
                    .write(move |conn| {
                        let event = AuditEvent {
                            actor: &actor,
                            action: AuditAction::CryptoRefused,
                            user_id: None,
                            device_id: None,
                            detail: Some(&detail),
                        };
                        crate::audit::record(conn, event, &origin, crate::clock::now())
                    })
                    .await;
                if let Err(e) = audited {
                    tracing::warn!(error = %e, "cannot audit a refused crypto call");
                }
                return Err(Problem::forbidden("this client is not granted scope crypto"));
            }
            Ok(CryptoCaller::Service { client_id: client.id.clone() })
        })
    }
}
