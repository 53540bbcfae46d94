//! What providers push about their accounts, checked before anything acts on it:
//! - Google Cross-Account Protection (RISC): Security Event Tokens (RFC 8417) signed with the
//!   keys of `{issuer}/.well-known/risc-configuration` (fetched once, single flight; the keys
//!   cached like every provider's);
//! - Facebook's `signed_request` (Deauthorize and Data Deletion callbacks): HMAC-SHA256 with
//!   the app secret, compared in constant time;
//! - Apple's server-to-server notifications: a JWT signed with Apple's keys.
//!
//! Each gives a [`Verified`] event with the key that makes it single use; acting on it is
//! `service::events`.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;

use super::jwks::JwksCache;
use super::{AssertionError, Providers};
use crate::crypto::sha256_b64;
use crate::metrics::Metrics;

/// SETs older than this are refused (API.md: `iat` within the last hour).
pub const MAX_EVENT_AGE_SECS: i64 = 3600;
const LEEWAY_SECS: i64 = 60;
const MAX_EVENT_LEN: usize = 16 * 1024;

/// Why an event was refused; `code` is RFC 8935's `err`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRefused {
    pub code: &'static str,
    pub description: String,
    /// The provider could not be asked for its keys: try again later (503).
    pub unavailable: bool,
}

impl EventRefused {
    fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self { code, description: description.into(), unavailable: false }
    }

    /// A malformed request (`invalid_request`).
    pub fn invalid(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }
}

impl From<AssertionError> for EventRefused {
    fn from(e: AssertionError) -> Self {
        match e {
            AssertionError::ProviderUnavailable => {
                Self { code: "temporarily_unavailable", description: e.to_string(), unavailable: true }
            }
            AssertionError::UnknownKey => Self::new("invalid_key", "the token is signed by an unknown key"),
            AssertionError::Signature | AssertionError::Algorithm => {
                Self::new("invalid_key", "the token's signature does not verify")
            }
            AssertionError::UnknownIssuer => {
                Self::new("invalid_issuer", "the token's issuer is not accepted")
            }
            AssertionError::Audience => Self::new("invalid_audience", "the token's audience is not accepted"),
            other => Self::new("invalid_request", other.to_string()),
        }
    }
}

/// An event whose signature, issuer, audience and age are checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Makes it single use: the same event again has the same key.
    pub replay_key: String,
    /// After this a replay would be refused anyway (stale), and its record can go.
    pub expires_at: i64,
    /// The events it carries: (type, body).
    pub events: Vec<(String, Value)>,
}

/// Google's RISC configuration, found once.
struct RiscConfig {
    issuer: String,
    keys: JwksCache,
}

/// Google's Cross-Account Protection receiver: where its configuration is, which audiences
/// are ours.
pub struct Risc {
    config_url: String,
    audiences: Vec<String>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    config: tokio::sync::OnceCell<RiscConfig>,
}

impl Risc {
    pub fn new(
        google_issuer: &str,
        audiences: Vec<String>,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Self {
        let config_url = format!("{}/.well-known/risc-configuration", google_issuer.trim_end_matches('/'));
        Self { config_url, audiences, http, metrics, config: tokio::sync::OnceCell::new() }
    }

    /// The configuration, fetched by the first caller while the others wait (a failed fetch
    /// leaves it to the next event).
    async fn config(&self) -> Result<&RiscConfig, EventRefused> {
        self.config
            .get_or_try_init(|| async {
                #[derive(Deserialize)]
                struct Document {
                    issuer: String,
                    jwks_uri: String,
                }
                let unavailable = |cause: String| {
                    tracing::warn!(url = %self.config_url, %cause, "Google's RISC configuration cannot be fetched");
                    EventRefused::from(AssertionError::ProviderUnavailable)
                };
                let answer = self.http.get(&self.config_url).send().await.map_err(|e| unavailable(e.without_url().to_string()))?;
                if !answer.status().is_success() {
                    return Err(unavailable(format!("status {}", answer.status())));
                }
                let body = answer.bytes().await.map_err(|e| unavailable(e.without_url().to_string()))?;
                let document: Document = serde_json::from_slice(&body).map_err(|e| unavailable(e.to_string()))?;
                let keys = JwksCache::with_jwks_uri(self.http.clone(), document.jwks_uri, "google-risc", self.metrics.clone());
                Ok(RiscConfig { issuer: document.issuer, keys })
            })
            .await
    }

    /// Verifies a Security Event Token: RS256 with the RISC keys, `iss` the RISC issuer, `aud`
    /// one of Google's `client_ids`, `iat` within the last hour, a `jti`.
    pub async fn verify(&self, token: &str) -> Result<Verified, EventRefused> {
        let config = self.config().await?;
        let (claims, _) =
            verify_jwt(token, &config.keys, std::slice::from_ref(&config.issuer), &self.audiences).await?;
        let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty() && j.len() <= 256);
        let jti = jti.ok_or_else(|| EventRefused::new("invalid_request", "the token has no jti"))?;
        let events = match claims.get("events") {
            Some(Value::Object(events)) => events.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => return Err(EventRefused::new("invalid_request", "the token has no events")),
        };
        let iat = claims["iat"].as_i64().unwrap_or_default();
        Ok(Verified {
            replay_key: sha256_b64(format!("risc:{}:{jti}", config.issuer).as_bytes()),
            expires_at: iat + MAX_EVENT_AGE_SECS + LEEWAY_SECS,
            events,
        })
    }

    /// The RISC issuer, once known: a subject's `iss` names it (Google's is
    /// `https://accounts.google.com/`).
    pub fn issuer(&self) -> Option<&str> {
        self.config.get().map(|c| c.issuer.as_str())
    }
}

/// Checks a provider-signed JWT: RS256 with `keys`, `iss` one of `issuers`, every `aud` one of
/// `audiences`, `iat` present, not from the future and within the last hour. Its claims and `iat`.
async fn verify_jwt(
    token: &str,
    keys: &JwksCache,
    issuers: &[String],
    audiences: &[String],
) -> Result<(Value, i64), EventRefused> {
    if token.len() > MAX_EVENT_LEN {
        return Err(EventRefused::new("invalid_request", "the token is too long"));
    }
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| EventRefused::new("invalid_request", "the body is not a signed JWT"))?;
    if header.alg != Algorithm::RS256 {
        return Err(EventRefused::new("invalid_key", "the token's algorithm is not RS256"));
    }
    let kid = header.kid.filter(|k| !k.is_empty() && k.len() <= 256).ok_or(AssertionError::UnknownKey)?;
    let key = keys.key(&kid).await?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.leeway = LEEWAY_SECS as u64;
    validation.set_issuer(issuers);
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["iss", "aud", "iat"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => AssertionError::UnknownIssuer,
            jsonwebtoken::errors::ErrorKind::InvalidAudience => AssertionError::Audience,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => AssertionError::Signature,
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                AssertionError::MissingClaim(c.clone())
            }
            _ => AssertionError::Malformed,
        })?
        .claims;
    let every_aud_ours = match &claims["aud"] {
        Value::String(a) => audiences.contains(a),
        Value::Array(list) => {
            list.iter().all(|a| a.as_str().is_some_and(|a| audiences.iter().any(|o| o == a)))
        }
        _ => false,
    };
    if !every_aud_ours {
        return Err(AssertionError::Audience.into());
    }
    let iat =
        claims["iat"].as_i64().ok_or_else(|| EventRefused::new("invalid_request", "iat is not a number"))?;
    let now = crate::clock::now();
    if iat > now + LEEWAY_SECS || now - iat > MAX_EVENT_AGE_SECS {
        return Err(EventRefused::new("invalid_request", "the token is stale or from the future"));
    }
    Ok((claims, iat))
}

/// Facebook's `signed_request`, checked: the app-scoped user id it is about.
#[derive(Debug, Clone)]
pub struct FacebookRequest {
    pub user_id: String,
    pub replay_key: String,
    pub expires_at: i64,
}

impl Providers {
    /// Verifies Facebook's `signed_request` (`base64url(signature).base64url(payload)`): the
    /// HMAC-SHA256 of the payload part under the app secret, compared in constant time;
    /// `algorithm` HMAC-SHA256; `issued_at` within the last hour; a `user_id`.
    pub fn verify_signed_request(&self, signed_request: &str) -> Result<FacebookRequest, EventRefused> {
        let facebook = self
            .facebook
            .as_ref()
            .ok_or_else(|| EventRefused::new("invalid_request", "Facebook is not configured"))?;
        let bad = |why: &str| EventRefused::new("invalid_request", why);
        if signed_request.len() > MAX_EVENT_LEN {
            return Err(bad("signed_request is too long"));
        }
        let (signature, payload) =
            signed_request.split_once('.').ok_or_else(|| bad("signed_request is malformed"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature.trim_end_matches('='))
            .map_err(|_| bad("signed_request is malformed"))?;
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            facebook.app_secret().expose_secret().as_bytes(),
        );
        aws_lc_rs::hmac::verify(&key, payload.as_bytes(), &signature).map_err(|_| {
            EventRefused::new("authentication_failed", "signed_request's signature does not verify")
        })?;
        let payload: Value = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| bad("signed_request's payload is not JSON"))?;
        if !payload["algorithm"].as_str().is_some_and(|a| a.eq_ignore_ascii_case("HMAC-SHA256")) {
            return Err(bad("signed_request's algorithm is not HMAC-SHA256"));
        }
        let issued_at =
            payload["issued_at"].as_i64().ok_or_else(|| bad("signed_request has no issued_at"))?;
        let now = crate::clock::now();
        if issued_at > now + LEEWAY_SECS || now - issued_at > MAX_EVENT_AGE_SECS {
            return Err(bad("signed_request is stale"));
        }
        let user_id = match &payload["user_id"] {
            Value::String(id) => id.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(bad("signed_request has no user_id")),
        };
        if user_id.is_empty() || user_id.len() > 255 || user_id.contains(char::is_control) {
            return Err(bad("signed_request's user_id is malformed"));
        }
        Ok(FacebookRequest {
            user_id,
            replay_key: sha256_b64(format!("facebook:{signed_request}").as_bytes()),
            expires_at: issued_at + MAX_EVENT_AGE_SECS + LEEWAY_SECS,
        })
    }

    /// Verifies Apple's notification JWT (`{"payload": JWT}`): Apple's keys, `iss`, `aud` one of
    /// `client_ids`, fresh; its `events` claim (a JSON string) as the one event it carries.
    pub async fn verify_apple_notification(&self, payload: &str) -> Result<Verified, EventRefused> {
        let apple = self
            .apple
            .as_ref()
            .ok_or_else(|| EventRefused::new("invalid_request", "Apple is not configured"))?;
        let (claims, iat) =
            verify_jwt(payload, apple.keys(), &[apple.issuer().to_string()], apple.client_ids()).await?;
        let event: Value = match &claims["events"] {
            Value::String(text) => serde_json::from_str(text).ok(),
            Value::Object(_) => Some(claims["events"].clone()),
            _ => None,
        }
        .filter(|e| e["type"].is_string() && e["sub"].is_string())
        .ok_or_else(|| EventRefused::new("invalid_request", "the notification has no event"))?;
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let replay =
            claims.get("jti").and_then(Value::as_str).map_or_else(|| payload.to_string(), str::to_string);
        Ok(Verified {
            replay_key: sha256_b64(format!("apple:{replay}").as_bytes()),
            expires_at: iat + MAX_EVENT_AGE_SECS + LEEWAY_SECS,
            events: vec![(kind, event)],
        })
    }
}
