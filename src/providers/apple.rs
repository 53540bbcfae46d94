//! Sign in with Apple beyond its ID tokens (which [`super::oidc::OidcVerifier`] checks):
//! the client secret idbridge signs for itself, the redemption of an authorization code at
//! Apple's token endpoint (for the refresh token kept to be revoked), the revocation at
//! account deletion, and the browser flow's authorization URL (`response_mode=form_post`).
//!
//! Apple's two endpoints are called with plain form POSTs through reqwest, not through the
//! openidconnect crate: its typed ID-token claims refuse Apple's `"true"`/`"false"` strings
//! for `email_verified`, which would fail a whole token response.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::jwks::{error_chain, JwksCache};
use super::AssertionError;
use crate::config::{AppleSettings, ConfigError};

/// How long a client secret lives: well under Apple's limit of 180 days.
pub const CLIENT_SECRET_TTL_SECS: i64 = 30 * 86_400;
/// A cached client secret is renewed once less than this is left of it.
const RENEW_BEFORE_SECS: i64 = 86_400;
/// Apple's answers are small; anything longer is not Apple's.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Apple's side of a configured `[providers.apple]`.
pub struct Apple {
    client_ids: Vec<String>,
    team_id: String,
    key_id: String,
    issuer: String,
    key: EncodingKey,
    /// Apple's discovery document and keys (shared with the ID-token verifier's cache).
    discovery: JwksCache,
    http: reqwest::Client,
    /// Client secrets by client id, with their expiry.
    secrets: Mutex<HashMap<String, (SecretString, i64)>>,
}

/// What Apple's token endpoint gave for a code.
pub struct Redeemed {
    pub refresh_token: Option<SecretString>,
    pub id_token: Option<String>,
}

/// How a revoke at Apple ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Revoke {
    /// Apple revoked it (or no longer knew it: RFC 7009 answers 200 either way).
    Done,
    /// Apple refused the request for good (the token is malformed or of another client).
    Refused,
    /// Apple could not be reached, failed, or refused idbridge's client secret: try again later.
    Retry,
}

#[derive(Deserialize)]
struct TokenAnswer {
    refresh_token: Option<String>,
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
}

#[derive(serde::Serialize)]
struct ClientSecretClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl Apple {
    /// Loads the Sign in with Apple key (`private_key`, a PKCS#8 PEM P-256 key) and proves it
    /// signs; a key that is missing, unreadable or not such a key names the setting.
    pub fn new(
        settings: &AppleSettings,
        discovery: JwksCache,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let bad = |message: String| ConfigError { key: "providers.apple.private_key".into(), message };
        let pem = crate::crypto::keyring::read_secret_source(settings.private_key.expose_secret(), false)
            .map_err(bad)?;
        let not_a_key = || bad("not a PKCS#8 PEM private key (the .p8 file Apple gives)".into());
        let (label, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes()).map_err(|_| not_a_key())?;
        let der = zeroize::Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(not_a_key());
        }
        let key = EncodingKey::from_ec_der(&der);
        let apple = Self {
            client_ids: settings.client_ids.clone(),
            team_id: settings.team_id.clone(),
            key_id: settings.key_id.clone(),
            issuer: settings.issuer.trim_end_matches('/').to_string(),
            key,
            discovery,
            http,
            secrets: Mutex::new(HashMap::new()),
        };
        apple
            .sign_client_secret(&apple.client_ids[0], 0)
            .map_err(|_| bad("cannot sign with this key (it must be a P-256 key)".into()))?;
        Ok(apple)
    }

    /// The Services ID the browser flow uses: the last of `client_ids` (bundle ids first).
    pub fn web_client_id(&self) -> &str {
        self.client_ids.last().map_or("", String::as_str)
    }

    pub fn client_ids(&self) -> &[String] {
        &self.client_ids
    }

    /// Apple's issuer, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Apple's signing keys (from discovery), shared with the ID-token verifier.
    pub fn keys(&self) -> &JwksCache {
        &self.discovery
    }

    pub fn accepts_client(&self, client_id: &str) -> bool {
        self.client_ids.iter().any(|c| c == client_id)
    }

    /// A fresh client secret: an ES256 JWT from the team, about the client, for Apple.
    fn sign_client_secret(
        &self,
        client_id: &str,
        now: i64,
    ) -> Result<(SecretString, i64), jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        header.typ = None;
        let exp = now + CLIENT_SECRET_TTL_SECS;
        let claims =
            ClientSecretClaims { iss: &self.team_id, sub: client_id, aud: &self.issuer, iat: now, exp };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        Ok((SecretString::from(jwt), exp))
    }

    /// The client secret for `client_id`, cached until a day before it expires.
    pub fn client_secret(&self, client_id: &str, now: i64) -> Result<SecretString, AssertionError> {
        let mut cache = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((secret, exp)) = cache.get(client_id) {
            if *exp - RENEW_BEFORE_SECS > now {
                return Ok(secret.clone());
            }
        }
        let (secret, exp) = self.sign_client_secret(client_id, now).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the Sign in with Apple client secret");
            AssertionError::ProviderUnavailable
        })?;
        cache.insert(client_id.to_string(), (secret.clone(), exp));
        Ok(secret)
    }

    /// Apple's token endpoint, from discovery (`{issuer}/auth/token` when it names none).
    async fn token_endpoint(&self) -> Result<String, AssertionError> {
        let metadata = self.discovery.metadata().await?;
        Ok(metadata.token_endpoint().map_or_else(|| format!("{}/auth/token", self.issuer), |u| u.to_string()))
    }

    /// Where the browser goes to sign in with Apple: the code flow answered by a form POST
    /// back to `callback`, asking for the name and e-mail.
    pub async fn authorization_url(
        &self,
        callback: &str,
        state: &str,
        nonce: &str,
    ) -> Result<String, AssertionError> {
        let metadata = self.discovery.metadata().await?;
        let mut url = metadata.authorization_endpoint().url().clone();
        url.query_pairs_mut()
            .append_pair("response_type", "code id_token")
            .append_pair("response_mode", "form_post")
            .append_pair("client_id", self.web_client_id())
            .append_pair("redirect_uri", callback)
            .append_pair("scope", "name email")
            .append_pair("state", state)
            .append_pair("nonce", nonce);
        Ok(url.to_string())
    }

    /// Redeems an authorization code Apple issued to `client_id` (with the redirect URI of
    /// the browser flow; none for an app's code).
    pub async fn redeem(
        &self,
        client_id: &str,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<Redeemed, AssertionError> {
        let secret = self.client_secret(client_id, crate::clock::now())?;
        let mut form = vec![
            ("client_id", client_id),
            ("client_secret", secret.expose_secret()),
            ("code", code),
            ("grant_type", "authorization_code"),
        ];
        if let Some(uri) = redirect_uri {
            form.push(("redirect_uri", uri));
        }
        let (status, body) = self
            .post(&self.token_endpoint().await?, &form)
            .await
            .ok_or(AssertionError::ProviderUnavailable)?;
        if status.is_success() {
            let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
                tracing::warn!("Apple's token endpoint answered something that is not a token response");
                AssertionError::ProviderUnavailable
            })?;
            return Ok(Redeemed {
                refresh_token: answer
                    .refresh_token
                    .filter(|t| !t.is_empty() && t.len() <= 2048)
                    .map(SecretString::from),
                id_token: answer.id_token,
            });
        }
        let error = serde_json::from_slice::<ErrorAnswer>(&body).ok().and_then(|e| e.error);
        match (status.as_u16(), error.as_deref()) {
            (400, Some("invalid_grant")) => {
                Err(AssertionError::Refused("Apple refused the authorization_code"))
            }
            (_, Some("invalid_client")) => {
                tracing::error!(
                    "Apple refused idbridge's client secret: check providers.apple team_id, key_id and private_key"
                );
                Err(AssertionError::ProviderUnavailable)
            }
            (400..=499, _) if status.as_u16() != 429 => {
                Err(AssertionError::Refused("Apple refused the authorization_code"))
            }
            _ => {
                tracing::warn!(status = status.as_u16(), "Apple's token endpoint failed");
                Err(AssertionError::ProviderUnavailable)
            }
        }
    }

    /// Revokes a refresh token Apple issued to `client_id` (`{issuer}/auth/revoke`).
    pub async fn revoke(&self, client_id: &str, token: &SecretString) -> Revoke {
        let Ok(secret) = self.client_secret(client_id, crate::clock::now()) else {
            return Revoke::Retry;
        };
        let form = [
            ("client_id", client_id),
            ("client_secret", secret.expose_secret()),
            ("token", token.expose_secret()),
            ("token_type_hint", "refresh_token"),
        ];
        let Some((status, body)) = self.post(&format!("{}/auth/revoke", self.issuer), &form).await else {
            return Revoke::Retry;
        };
        let error = serde_json::from_slice::<ErrorAnswer>(&body).ok().and_then(|e| e.error);
        match status.as_u16() {
            200..=299 => Revoke::Done,
            429 | 500..=599 => Revoke::Retry,
            _ if error.as_deref() == Some("invalid_client") => {
                tracing::error!(
                    "Apple refused idbridge's client secret for a revoke: check providers.apple team_id, key_id and private_key"
                );
                Revoke::Retry
            }
            _ => Revoke::Refused,
        }
    }

    /// A form POST; `None` when Apple cannot be reached or its answer cannot be read. The
    /// URL and the form never reach the log.
    async fn post(&self, url: &str, form: &[(&str, &str)]) -> Option<(reqwest::StatusCode, Vec<u8>)> {
        let sent =
            self.http.post(url).header(reqwest::header::ACCEPT, "application/json").form(form).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(cause = %error_chain(&e.without_url()), "Apple cannot be reached");
                return None;
            }
        };
        let status = response.status();
        match response.bytes().await {
            Ok(body) if body.len() <= MAX_ANSWER_BYTES => Some((status, body.to_vec())),
            Ok(_) => {
                tracing::warn!("Apple's answer is too long");
                None
            }
            Err(e) => {
                tracing::warn!(cause = %error_chain(&e.without_url()), "Apple's answer cannot be read");
                None
            }
        }
    }
}

impl super::Providers {
    /// Redeems the authorization code an app got from Apple with the ID token `assertion`
    /// (native, no redirect URI) or that the browser flow got at `redirect_uri`: the refresh
    /// token to keep, when Apple gave one. The ID token Apple answers with must be the same
    /// person's.
    pub async fn redeem_apple_code(
        &self,
        assertion: &super::VerifiedAssertion,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<Option<super::UpstreamGrant>, AssertionError> {
        let apple = self.apple.as_ref().ok_or(AssertionError::NotConfigured("apple"))?;
        let client_id = assertion
            .audience
            .clone()
            .filter(|aud| apple.accepts_client(aud))
            .ok_or(AssertionError::Audience)?;
        let redeemed = apple.redeem(&client_id, code, redirect_uri).await?;
        if let Some(id_token) = &redeemed.id_token {
            let theirs = self.verify_id_token(id_token, Some(super::ProviderKind::Apple)).await?;
            if theirs.subject != assertion.subject {
                return Err(AssertionError::Refused("the authorization_code is another Apple account's"));
            }
        }
        Ok(redeemed.refresh_token.map(|refresh_token| super::UpstreamGrant { client_id, refresh_token }))
    }
}
