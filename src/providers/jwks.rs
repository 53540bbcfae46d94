//! A provider's signing keys: discovery (openidconnect) finds `jwks_uri`; the key set is
//! cached for the response's `Cache-Control: max-age`; an unknown `kid` forces one refetch,
//! at most once a minute.
//!
//! A slow or failing key endpoint must not queue sign-ins behind it:
//! - single flight: one fetch at a time, run as its own task; every request that needs it
//!   waits for that one fetch and shares its outcome;
//! - stale-if-error: while a refresh runs, or after it failed, keys past their `max-age`
//!   still verify for up to [`STALE_LIMIT`];
//! - back-off: after a failure the next fetch waits 1 s, doubling to 60 s;
//! - a key set with no usable key (`{"keys": []}`) is a failed fetch: it never replaces the
//!   cached keys, and a token naming a key that could not be fetched while the provider fails
//!   is the provider's fault (503), not the client's (400).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{FutureExt, Shared};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::DecodingKey;
use openidconnect::core::CoreProviderMetadata;
use openidconnect::IssuerUrl;

use super::AssertionError;
use crate::metrics::Metrics;

const FORCED_REFETCH_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
const MIN_MAX_AGE: Duration = Duration::from_secs(5);
const MAX_MAX_AGE: Duration = Duration::from_secs(86_400);
/// How long past their `max-age` cached keys may still verify while they cannot be refreshed.
pub const STALE_LIMIT: Duration = Duration::from_secs(6 * 3600);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

type FetchOutcome = Result<(), AssertionError>;
type InFlight = Shared<Pin<Box<dyn Future<Output = FetchOutcome> + Send>>>;

/// What the cache knows; every decision about fetching is made from this alone (see [`plan`]).
#[derive(Default)]
struct CacheState {
    keys: HashMap<String, Arc<DecodingKey>>,
    fresh_until: Option<Instant>,
    last_forced_refetch: Option<Instant>,
    /// After a failed fetch, none starts before this.
    retry_not_before: Option<Instant>,
    failures: u32,
    in_flight: Option<InFlight>,
}

/// What a verification does with the cache as it is.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Verify with the cached key.
    Use,
    /// Verify with the cached (stale) key, and start a refresh in the background.
    UseAndRefresh,
    /// Wait for a fetch (the one in flight, or a new one), then look again.
    Fetch {
        forced: bool,
    },
    Fail(AssertionError),
}

/// The decision, given the cache at `now`: whether `kid` is cached, how fresh the set is,
/// whether a fetch is running, and whether back-off or the forced-refetch limit holds one off.
fn plan(state: &CacheState, kid: &str, now: Instant) -> Plan {
    let fresh = state.fresh_until.is_some_and(|t| now < t);
    let stale_ok = state.fresh_until.is_some_and(|t| now < t + STALE_LIMIT);
    let backing_off = state.retry_not_before.is_some_and(|t| now < t);
    let running = state.in_flight.is_some();
    let known = state.keys.contains_key(kid);
    match (known, fresh) {
        (true, true) => Plan::Use,
        (true, false) if stale_ok => {
            if running || backing_off {
                Plan::Use
            } else {
                Plan::UseAndRefresh
            }
        }
        // A kid the fresh set lacks: the provider may have rotated; refetch at most once a minute.
        (false, true) => {
            let may_force =
                state.last_forced_refetch.is_none_or(|t| now.duration_since(t) >= FORCED_REFETCH_INTERVAL);
            if running {
                Plan::Fetch { forced: false }
            } else if may_force && !backing_off {
                Plan::Fetch { forced: true }
            } else if state.failures > 0 {
                // The provider is failing: the key may be one we could not fetch. Its fault,
                // not the client's.
                Plan::Fail(AssertionError::ProviderUnavailable)
            } else {
                Plan::Fail(AssertionError::UnknownKey)
            }
        }
        // Nothing usable: wait for a fetch, unless one just failed.
        _ => {
            if running || !backing_off {
                Plan::Fetch { forced: false }
            } else {
                Plan::Fail(AssertionError::ProviderUnavailable)
            }
        }
    }
}

struct Inner {
    http: reqwest::Client,
    issuer: String,
    provider: &'static str,
    metrics: Arc<Metrics>,
    jwks_uri: Mutex<Option<String>>,
    /// The whole discovery document, for the browser flow's endpoints.
    metadata: Mutex<Option<CoreProviderMetadata>>,
    state: Mutex<CacheState>,
}

#[derive(Clone)]
pub struct JwksCache {
    inner: Arc<Inner>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client, issuer: String, provider: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                issuer,
                provider,
                metrics,
                jwks_uri: Mutex::new(None),
                metadata: Mutex::new(None),
                state: Mutex::new(CacheState::default()),
            }),
        }
    }

    /// A key set at a known address, without discovery (Facebook Limited Login).
    pub fn with_jwks_uri(
        http: reqwest::Client,
        jwks_uri: String,
        provider: &'static str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cache = Self::new(http, jwks_uri.clone(), provider, metrics);
        *cache.inner.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(jwks_uri);
        cache
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, AssertionError> {
        // Two rounds: the second looks again after the fetch the first waited for.
        for _ in 0..2 {
            let fetch = {
                let mut state = self.state();
                match plan(&state, kid, Instant::now()) {
                    Plan::Use => return state.keys.get(kid).cloned().ok_or(AssertionError::UnknownKey),
                    Plan::UseAndRefresh => {
                        drop(self.start_fetch(&mut state));
                        return state.keys.get(kid).cloned().ok_or(AssertionError::UnknownKey);
                    }
                    Plan::Fail(e) => return Err(e),
                    Plan::Fetch { forced } => {
                        if forced {
                            state.last_forced_refetch = Some(Instant::now());
                        }
                        self.start_fetch(&mut state)
                    }
                }
            };
            fetch.await?;
        }
        self.state().keys.get(kid).cloned().ok_or(AssertionError::UnknownKey)
    }

    /// The fetch in flight, or a new one: a task of its own, so a caller that goes away
    /// does not cancel it for the others.
    fn start_fetch(&self, state: &mut CacheState) -> InFlight {
        if let Some(running) = &state.in_flight {
            return running.clone();
        }
        let cache = self.clone();
        let task = tokio::spawn(async move {
            let outcome = cache.fetch().await;
            let now = Instant::now();
            let mut state = cache.state();
            state.in_flight = None;
            match &outcome {
                Ok(()) => {
                    state.failures = 0;
                    state.retry_not_before = None;
                }
                Err(_) => {
                    state.failures = state.failures.saturating_add(1);
                    let backoff = FIRST_BACKOFF.saturating_mul(1 << state.failures.min(7).saturating_sub(1));
                    state.retry_not_before = Some(now + backoff.min(MAX_BACKOFF));
                }
            }
            outcome
        });
        let shared: InFlight =
            async move { task.await.unwrap_or(Err(AssertionError::ProviderUnavailable)) }.boxed().shared();
        state.in_flight = Some(shared.clone());
        shared
    }

    /// The provider's discovery document (fetched once).
    pub async fn metadata(&self) -> Result<CoreProviderMetadata, AssertionError> {
        if let Some(metadata) = self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(metadata);
        }
        self.inner.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.discover().await?;
        self.inner
            .metadata
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(AssertionError::ProviderUnavailable)
    }

    /// Reads the discovery document into openidconnect's `CoreProviderMetadata` and checks
    /// its issuer. (openidconnect's own `discover_async` also downloads the JWKS, without its
    /// `Cache-Control`, which would double the first fetch.)
    async fn discover(&self) -> Result<String, AssertionError> {
        if let Some(uri) = self.inner.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(uri.clone());
        }
        let issuer = &self.inner.issuer;
        let issuer_url = IssuerUrl::new(issuer.clone()).map_err(|_| AssertionError::ProviderUnavailable)?;
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let fail = |cause: String| {
            tracing::warn!(%issuer, %cause, "OpenID discovery failed");
            AssertionError::ProviderUnavailable
        };
        let response = self
            .inner
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| fail(error_chain(&e.without_url())))?;
        let body = response.bytes().await.map_err(|e| fail(error_chain(&e.without_url())))?;
        let metadata: CoreProviderMetadata =
            serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        if metadata.issuer() != &issuer_url {
            return Err(fail(format!("the document names issuer {}", metadata.issuer().as_str())));
        }
        let found = metadata.jwks_uri().url().to_string();
        *self.inner.metadata.lock().unwrap_or_else(|p| p.into_inner()) = Some(metadata);
        *self.inner.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(found.clone());
        Ok(found)
    }

    async fn fetch(&self) -> FetchOutcome {
        let outcome = self.download().await;
        let label = if outcome.is_ok() { "ok" } else { "error" };
        self.inner.metrics.jwks_fetches.with_label_values(&[self.inner.provider, label]).inc();
        outcome
    }

    async fn download(&self) -> FetchOutcome {
        let uri = self.discover().await?;
        let issuer = &self.inner.issuer;
        let unavailable = |e: reqwest::Error| {
            tracing::warn!(%issuer, cause = %error_chain(&e.without_url()), "JWKS fetch failed");
            AssertionError::ProviderUnavailable
        };
        let response = self
            .inner
            .http
            .get(&uri)
            .send()
            .await
            .map_err(unavailable)?
            .error_for_status()
            .map_err(unavailable)?;
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_MAX_AGE)
            .clamp(MIN_MAX_AGE, MAX_MAX_AGE);
        let body: serde_json::Value = response.json().await.map_err(unavailable)?;
        let keys = parse_rsa_signing_keys(&body);
        if keys.is_empty() {
            // An empty or unusable set is a failed fetch, not news that every key was withdrawn:
            // the keys cached so far go on verifying (stale-if-error), and back-off applies.
            tracing::warn!(%issuer, "the JWKS holds no usable signing key; keeping the cached keys");
            return Err(AssertionError::ProviderUnavailable);
        }
        tracing::info!(%issuer, keys = keys.len(), max_age_secs = max_age.as_secs(), "fetched JWKS");
        let mut state = self.state();
        state.keys = keys;
        state.fresh_until = Some(Instant::now() + max_age);
        Ok(())
    }
}

/// An error and its causes, "refused", "timed out", "dns error" included: reqwest's own
/// message names only the URL.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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

    fn cached(
        kid: &str,
        fresh_for: Option<Duration>,
        stale_for: Option<Duration>,
        now: Instant,
    ) -> CacheState {
        let mut state = CacheState::default();
        state.keys.insert(kid.into(), Arc::new(DecodingKey::from_secret(b"k").unwrap()));
        state.fresh_until = fresh_for.map(|d| now + d).or(stale_for.map(|d| now - d));
        state
    }

    #[test]
    fn fresh_keys_are_used_without_a_fetch() {
        let now = Instant::now();
        let state = cached("a", Some(Duration::from_secs(10)), None, now);
        assert_eq!(plan(&state, "a", now), Plan::Use);
    }

    #[test]
    fn stale_keys_verify_while_one_refresh_runs_in_the_background() {
        let now = Instant::now();
        let mut state = cached("a", None, Some(Duration::from_secs(1)), now);
        assert_eq!(plan(&state, "a", now), Plan::UseAndRefresh);
        state.in_flight = Some(async { Ok(()) }.boxed().shared());
        assert_eq!(plan(&state, "a", now), Plan::Use, "no second refresh while one runs");
    }

    #[test]
    fn stale_keys_verify_after_a_failed_refresh_but_only_for_a_bounded_time() {
        let now = Instant::now();
        let mut state = cached("a", None, Some(Duration::from_secs(60)), now);
        state.retry_not_before = Some(now + Duration::from_secs(5));
        assert_eq!(plan(&state, "a", now), Plan::Use, "stale-if-error, no fetch while backing off");
        let state = cached("a", None, Some(STALE_LIMIT + Duration::from_secs(1)), now);
        assert_eq!(plan(&state, "a", now), Plan::Fetch { forced: false }, "too stale: must fetch");
    }

    #[test]
    fn after_a_failure_nothing_is_fetched_until_the_back_off_ends() {
        let now = Instant::now();
        let mut state =
            CacheState { retry_not_before: Some(now + Duration::from_secs(2)), ..Default::default() };
        assert_eq!(plan(&state, "a", now), Plan::Fail(AssertionError::ProviderUnavailable));
        assert_eq!(plan(&state, "a", now + Duration::from_secs(2)), Plan::Fetch { forced: false });
        state.in_flight = Some(async { Ok(()) }.boxed().shared());
        assert_eq!(plan(&state, "a", now), Plan::Fetch { forced: false }, "joins the fetch in flight");
    }

    #[test]
    fn an_unknown_kid_forces_one_refetch_a_minute() {
        let now = Instant::now();
        let mut state = cached("a", Some(Duration::from_secs(100)), None, now);
        assert_eq!(plan(&state, "b", now), Plan::Fetch { forced: true });
        state.last_forced_refetch = Some(now);
        assert_eq!(plan(&state, "b", now + Duration::from_secs(59)), Plan::Fail(AssertionError::UnknownKey));
    }

    #[test]
    fn a_logged_error_names_its_underlying_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(error_chain(&Outer(refused)), "error sending request: connection refused");
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=19770, must-revalidate"), Some(Duration::from_secs(19770)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
