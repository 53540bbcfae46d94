//! A provider's signing keys: discovery (openidconnect) finds `jwks_uri`; the key set is
//! cached for the response's `Cache-Control: max-age`; an unknown `kid` forces one refetch,
//! at most once a minute.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use openidconnect::core::CoreProviderMetadata;
use openidconnect::IssuerUrl;

use super::AssertionError;

const FORCED_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MIN_MAX_AGE: Duration = Duration::from_secs(5);
const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);

#[derive(Default)]
struct CachedKeys {
    keys: HashMap<String, Arc<DecodingKey>>,
    fresh_until: Option<Instant>,
    last_forced_refetch: Option<Instant>,
}

pub struct JwksCache {
    http: reqwest::Client,
    issuer: String,
    jwks_uri: tokio::sync::Mutex<Option<String>>,
    cached: RwLock<CachedKeys>,
    /// One fetch at a time; others wait and read its result.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, issuer: String) -> Self {
        Self {
            http,
            issuer,
            jwks_uri: tokio::sync::Mutex::new(None),
            cached: RwLock::new(CachedKeys::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn lookup(&self, kid: &str) -> (Option<Arc<DecodingKey>>, bool) {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        let fresh = cached.fresh_until.is_some_and(|t| Instant::now() < t);
        (cached.keys.get(kid).cloned(), fresh)
    }

    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AssertionError> {
        if let (Some(key), true) = self.lookup(kid) {
            return Ok(key);
        }
        let _one_fetch = self.fetching.lock().await;
        let (key, fresh) = self.lookup(kid);
        if !fresh {
            // Expired (or never fetched): an ordinary fetch; stale keys serve if it fails.
            match self.fetch().await {
                Ok(()) => return self.lookup(kid).0.ok_or(AssertionError::UnknownKey),
                Err(e) => return key.ok_or(e),
            }
        }
        if let Some(key) = key {
            return Ok(key);
        }
        let may_force = {
            let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
            let due = cached.last_forced_refetch.is_none_or(|t| t.elapsed() >= FORCED_REFETCH_INTERVAL);
            if due {
                cached.last_forced_refetch = Some(Instant::now());
            }
            due
        };
        if !may_force {
            return Err(AssertionError::UnknownKey);
        }
        self.fetch().await?;
        self.lookup(kid).0.ok_or(AssertionError::UnknownKey)
    }

    /// Reads the discovery document into openidconnect's `CoreProviderMetadata` and checks
    /// its issuer. (openidconnect's own `discover_async` also downloads the JWKS, without its
    /// `Cache-Control`, which would double the first fetch.)
    async fn discover(&self) -> Result<String, AssertionError> {
        let mut uri = self.jwks_uri.lock().await;
        if let Some(uri) = uri.as_ref() {
            return Ok(uri.clone());
        }
        let issuer = IssuerUrl::new(self.issuer.clone()).map_err(|_| AssertionError::ProviderUnavailable)?;
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let fail = |e: String| {
            tracing::warn!(issuer = %self.issuer, error = %e, "OpenID discovery failed");
            AssertionError::ProviderUnavailable
        };
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fail(e.to_string()))?;
        let body = response.bytes().await.map_err(|e| fail(e.to_string()))?;
        let metadata: CoreProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        if metadata.issuer() != &issuer {
            return Err(fail(format!("the document names issuer {}", metadata.issuer().as_str())));
        }
        let found = metadata.jwks_uri().url().to_string();
        *uri = Some(found.clone());
        Ok(found)
    }

    async fn fetch(&self) -> Result<(), AssertionError> {
        let uri = self.discover().await?;
        let unavailable = |e: reqwest::Error| {
            tracing::warn!(issuer = %self.issuer, error = %e, "JWKS fetch failed");
            AssertionError::ProviderUnavailable
        };
        let response =
            self.http.get(&uri).send().await.map_err(unavailable)?.error_for_status().map_err(unavailable)?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MIN_MAX_AGE, MAX_MAX_AGE);
        let body: serde_json::Value = response.json().await.map_err(unavailable)?;
        let keys = parse_rsa_signing_keys(&body);
        tracing::info!(issuer = %self.issuer, keys = keys.len(), max_age_secs = max_age.as_secs(), "fetched JWKS");
        let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
        cached.keys = keys;
        cached.fresh_until = Some(Instant::now() + max_age);
        Ok(())
    }
}

/// Keys usable for RS256 signatures, by `kid`; anything else in the set is ignored.
fn parse_rsa_signing_keys(body: &serde_json::Value) -> HashMap<String, Arc<DecodingKey>> {
    let Some(keys) = body.get("keys").and_then(|k| k.as_array()) else {
        return HashMap::new();
    };
    keys.iter()
        .filter(|k| k.get("kty").and_then(|v| v.as_str()) == Some("RSA"))
        .filter(|k| k.get("use").and_then(|v| v.as_str()).is_none_or(|u| u == "sig"))
        .filter(|k| k.get("alg").and_then(|v| v.as_str()).is_none_or(|a| a == "RS256"))
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            DecodingKey::from_jwk(&jwk).ok().map(|key| (kid, Arc::new(key)))
        })
        .collect()
}

/// `max-age` of a Cache-Control header; `no-cache`/`no-store` mean "refetch when needed".
fn max_age(header: &str) -> Option<Duration> {
    let mut age = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(value) = lower.strip_prefix("max-age=") {
            age = value.trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=19770, must-revalidate"), Some(Duration::from_secs(19770)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
