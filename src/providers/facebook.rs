//! Facebook: classic user access tokens and iOS Limited Login ID tokens.
//!
//! An access token is checked as Facebook documents it: `debug_token` with the app access token
//! (`is_valid`, `app_id` equal to ours, `type` `USER`, not expired; the user id is taken from
//! that answer only), then `me?fields=id,name,email` with `appsecret_proof`, the hex
//! HMAC-SHA256 of the token under the app secret. The `app_id` check is what refuses a token
//! issued to another app (token substitution, CVE-2013-4593).
//!
//! A Limited Login token is an OIDC JWT: RS256 against the Limited Login JWKS, `iss` the
//! configured issuer, `aud` our app id, `exp`, and a nonce idbridge issued (checked by the
//! caller), through the same verifier as Google's ID tokens.
//!
//! Graph calls are bounded by the provider HTTP client's timeouts; a Graph that cannot be
//! reached or answers 5xx is `ProviderUnavailable` (503). Tokens and the app secret travel in
//! query strings, so errors are logged without their URL.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;

use super::jwks::{error_chain, JwksCache};
use super::oidc::{IdTokenPolicy, KeySource, OidcVerifier};
use super::{AssertionError, ProviderKind, VerifiedAssertion};
use crate::config::FacebookSettings;
use crate::metrics::Metrics;

pub struct Facebook {
    app_id: String,
    app_secret: SecretString,
    graph_url: String,
    dialog_url: String,
    http: reqwest::Client,
    breaker: std::sync::Mutex<Breaker>,
}

/// After the Graph API failed (unreachable, timed out, 5xx, throttled), calls are refused at
/// once for a while (1 s, doubling to 60 s) instead of each waiting for the timeout again, as
/// for a provider's keys (`jwks`). Any answer that is not an outage closes it.
#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<std::time::Instant>,
}

impl Breaker {
    fn is_open(&self, now: std::time::Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }

    fn failed(&mut self, now: std::time::Instant) {
        self.failures = self.failures.saturating_add(1);
        let wait = std::time::Duration::from_secs(1 << self.failures.min(7).saturating_sub(1));
        self.open_until = Some(now + wait.min(std::time::Duration::from_secs(60)));
    }

    fn succeeded(&mut self) {
        *self = Breaker::default();
    }
}

/// The verifier of Limited Login ID tokens.
pub fn limited_login_verifier(
    settings: &FacebookSettings,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
) -> OidcVerifier {
    OidcVerifier::new(
        ProviderKind::Facebook,
        IdTokenPolicy {
            issuers: vec![settings.limited_login_issuer.trim_end_matches('/').to_string()],
            audiences: vec![settings.app_id.clone()],
            hosted_domain: None,
            algorithm: jsonwebtoken::Algorithm::RS256,
        },
        KeySource::Remote(JwksCache::with_jwks_uri(
            http,
            settings.limited_login_jwks_url.clone(),
            "facebook",
            metrics,
        )),
    )
}

#[derive(Deserialize)]
struct DebugToken {
    data: DebugTokenData,
}

#[derive(Deserialize)]
struct DebugTokenData {
    #[serde(default)]
    is_valid: bool,
    app_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    expires_at: Option<i64>,
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct Me {
    id: String,
    name: Option<String>,
    email: Option<String>,
}

/// What a Graph call came to: a body to read, a refusal (4xx), or an outage.
enum Graph {
    Ok(Vec<u8>),
    Refused,
}

impl Facebook {
    pub fn new(settings: &FacebookSettings, http: reqwest::Client) -> Self {
        Self {
            app_id: settings.app_id.clone(),
            app_secret: settings.app_secret.clone(),
            graph_url: settings.graph_url.trim_end_matches('/').to_string(),
            dialog_url: settings.dialog_url.clone(),
            http,
            breaker: std::sync::Mutex::new(Breaker::default()),
        }
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn app_secret(&self) -> &SecretString {
        &self.app_secret
    }

    pub fn graph_url(&self) -> &str {
        &self.graph_url
    }

    pub fn dialog_url(&self) -> &str {
        &self.dialog_url
    }

    /// The hex HMAC-SHA256 of `token` under the app secret.
    pub fn appsecret_proof(&self, token: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.app_secret.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(token.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A Graph call behind the breaker: refused at once while it is open; an outage opens it.
    async fn graph_get(&self, path: &str, query: &[(&str, &str)]) -> Result<Graph, AssertionError> {
        if self.breaker().is_open(std::time::Instant::now()) {
            return Err(AssertionError::ProviderUnavailable);
        }
        let outcome = self.graph_call(path, query).await;
        match &outcome {
            Err(AssertionError::ProviderUnavailable) => self.breaker().failed(std::time::Instant::now()),
            _ => self.breaker().succeeded(),
        }
        outcome
    }

    async fn graph_call(&self, path: &str, query: &[(&str, &str)]) -> Result<Graph, AssertionError> {
        let unavailable = |e: reqwest::Error| {
            tracing::warn!(cause = %error_chain(&e.without_url()), "Facebook Graph call failed");
            AssertionError::ProviderUnavailable
        };
        let response = self
            .http
            .get(format!("{}/{path}", self.graph_url))
            .query(query)
            .send()
            .await
            .map_err(unavailable)?;
        let status = response.status();
        if status.is_server_error() || status.is_redirection() || status.as_u16() == 429 {
            tracing::warn!(%status, path, "Facebook Graph answered with an error");
            return Err(AssertionError::ProviderUnavailable);
        }
        if status.is_client_error() {
            // Throttling (app, user or page rate limits) is Facebook's side, not the token's:
            // a client should retry later rather than drop its token.
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_i64().unwrap_or(0);
            if matches!(code, 4 | 17 | 32 | 613) || status.as_u16() == 403 && code == 0 {
                tracing::warn!(%status, code, path, "Facebook Graph throttled the call");
                return Err(AssertionError::ProviderUnavailable);
            }
            tracing::info!(%status, code, path, "Facebook Graph refused the call");
            return Ok(Graph::Refused);
        }
        Ok(Graph::Ok(response.bytes().await.map_err(unavailable)?.to_vec()))
    }

    /// Checks a user access token with Facebook and returns who it belongs to.
    pub async fn verify_access_token(&self, token: &str) -> Result<VerifiedAssertion, AssertionError> {
        if token.is_empty() || token.len() > 4096 || token.contains(|c: char| c.is_control() || c == '|') {
            return Err(AssertionError::Malformed);
        }
        let app_token = format!("{}|{}", self.app_id, self.app_secret.expose_secret());
        let body = match self
            .graph_get("debug_token", &[("input_token", token), ("access_token", &app_token)])
            .await?
        {
            Graph::Ok(body) => body,
            Graph::Refused => {
                return Err(AssertionError::Refused("Facebook does not know this access token"))
            }
        };
        let debug: DebugToken = serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!("Facebook debug_token answered something unreadable");
            AssertionError::ProviderUnavailable
        })?;
        let data = debug.data;
        if !data.is_valid {
            return Err(AssertionError::Refused("the access token is not valid"));
        }
        if data.app_id.as_deref() != Some(self.app_id.as_str()) {
            return Err(AssertionError::Refused("the access token was issued to another app"));
        }
        if data.kind.as_deref() != Some("USER") {
            return Err(AssertionError::Refused("the access token is not a user access token"));
        }
        let now = crate::clock::now();
        let expires_at = data.expires_at.unwrap_or(0);
        if expires_at != 0 && expires_at <= now {
            return Err(AssertionError::Expired);
        }
        let user_id =
            data.user_id.filter(|u| !u.is_empty() && u.len() <= 64 && !u.contains(char::is_control));
        let user_id = user_id.ok_or(AssertionError::BadClaim("user_id"))?;

        let proof = self.appsecret_proof(token);
        let query =
            [("fields", "id,name,email"), ("access_token", token), ("appsecret_proof", proof.as_str())];
        let body = match self.graph_get("me", &query).await? {
            Graph::Ok(body) => body,
            Graph::Refused => return Err(AssertionError::Refused("Facebook refused the profile request")),
        };
        let me: Me = serde_json::from_slice(&body).map_err(|_| AssertionError::ProviderUnavailable)?;
        if me.id != user_id {
            return Err(AssertionError::Refused("the profile does not belong to the token's user"));
        }
        let plain =
            |v: &Option<String>| v.as_ref().is_none_or(|t| t.len() <= 320 && !t.contains(char::is_control));
        if !plain(&me.name) || !plain(&me.email) {
            return Err(AssertionError::BadClaim("profile"));
        }
        Ok(VerifiedAssertion {
            provider: ProviderKind::Facebook,
            subject: user_id,
            email: me.email,
            // Facebook does not say whether it verified the address.
            email_verified: None,
            name: me.name,
            nonce: None,
            // Facebook's SDK caches its token and sends it again while it is valid.
            assertion_hash: None,
            expires_at: if expires_at == 0 { now + 3600 } else { expires_at },
            audience: None,
            upstream: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appsecret_proof_is_the_hex_hmac_of_the_token_under_the_app_secret() {
        let settings = FacebookSettings {
            app_id: "1".into(),
            app_secret: SecretString::from("secret".to_string()),
            graph_url: "http://graph".into(),
            dialog_url: "http://dialog".into(),
            limited_login_issuer: "http://ll".into(),
            limited_login_jwks_url: "http://ll/jwks".into(),
        };
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let fb = Facebook::new(&settings, reqwest::Client::new());
        // HMAC-SHA256 of "token" under "secret", as `openssl dgst -sha256 -hmac secret` prints it.
        assert_eq!(
            fb.appsecret_proof("token"),
            "e941110e3d2bfe82621f0e3e1434730d7305d106c5f68c87165d0b27a4611a4a"
        );
        assert_ne!(fb.appsecret_proof("token"), fb.appsecret_proof("other"));
    }
}
