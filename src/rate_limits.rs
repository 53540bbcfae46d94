//! Rate limits on the `/oauth` endpoints (GCRA, the `governor` crate): per peer address for
//! public clients and failed client authentications, per client for authenticated
//! confidential clients (see `auth::authenticate_client`). A refused request gets `429` with
//! `Retry-After` (`http::errors` turns a [`RetryAfter`] into that answer).

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitSettings;
use crate::metrics::Metrics;

/// A refused request: how many seconds until it may be tried again (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_client: Option<DefaultKeyedRateLimiter<String>>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
    Some(RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            per_ip: limiter(settings.per_ip_per_second),
            per_client: limiter(settings.per_client_per_second),
        }
    }

    /// Counts a request from `ip`; `429` when that address is over its rate.
    pub fn check_ip(&self, ip: Option<IpAddr>, metrics: &Metrics) -> Result<(), RetryAfter> {
        match (&self.per_ip, ip) {
            (Some(limiter), Some(ip)) => refuse_if_over(limiter.check_key(&ip), "ip", metrics),
            _ => Ok(()),
        }
    }

    /// Counts a request of an authenticated client; `429` when the client is over its rate.
    pub fn check_client(&self, client_id: &str, metrics: &Metrics) -> Result<(), RetryAfter> {
        match &self.per_client {
            Some(limiter) => refuse_if_over(limiter.check_key(&client_id.to_string()), "client", metrics),
            None => Ok(()),
        }
    }

    /// Forgets keys whose buckets are full again, so the maps do not grow without bound.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.per_ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_client {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn refuse_if_over(
    outcome: Result<(), governor::NotUntil<<DefaultClock as Clock>::Instant>>,
    limit: &'static str,
    metrics: &Metrics,
) -> Result<(), RetryAfter> {
    outcome.map_err(|not_until| {
        metrics.rate_limited.with_label_values(&[limit]).inc();
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        RetryAfter((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
    })
}
