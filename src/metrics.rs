//! `/metrics`: Prometheus counters and histograms (the `prometheus` crate, text format).
//! Request counts and latencies by route and status, sign-ins and refreshes by outcome, reuse
//! detections, JWKS fetches, rate-limit refusals, and at scrape time the database pool and the
//! signing key's age.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub sign_ins: IntCounterVec,
    pub refreshes: IntCounterVec,
    pub refresh_reuse: IntCounter,
    pub jwks_fetches: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub db_pool_connections: IntGaugeVec,
    pub signing_key_age: IntGauge,
    pub provider_events: IntCounterVec,
    pub backchannel_logouts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("idbridge".into()), None).expect("a valid prefix");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("registered once");
            c
        };
        let http_requests = counter(
            "http_requests_total",
            "HTTP requests by route, method and status",
            &["route", "method", "status"],
        );
        let sign_ins =
            counter("sign_ins_total", "Sign-ins by provider and outcome", &["provider", "outcome"]);
        let refreshes = counter("refreshes_total", "Refresh-token grants by outcome", &["outcome"]);
        let jwks_fetches =
            counter("jwks_fetches_total", "Provider JWKS fetches by outcome", &["provider", "outcome"]);
        let rate_limited = counter("rate_limited_total", "Requests refused with 429, by limit", &["limit"]);
        let provider_events = counter(
            "provider_events_total",
            "Session events from providers by provider, event and outcome",
            &["provider", "event", "outcome"],
        );
        let backchannel_logouts = counter(
            "backchannel_logouts_total",
            "Back-channel logout deliveries by outcome (delivered, failed, given_up, no_uri)",
            &["outcome"],
        );
        let http_duration = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route and status")
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ]),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        registry.register(Box::new(http_duration.clone())).expect("registered once");
        let refresh_reuse =
            IntCounter::new("refresh_token_reuse_total", "Refresh-token reuse detections (device revoked)")
                .expect("valid metric");
        registry.register(Box::new(refresh_reuse.clone())).expect("registered once");
        let db_pool_connections = IntGaugeVec::new(
            Opts::new("db_pool_connections", "Database pool connections by state (idle, in_use)"),
            &["state"],
        )
        .expect("valid metric");
        registry.register(Box::new(db_pool_connections.clone())).expect("registered once");
        let signing_key_age =
            IntGauge::new("signing_key_age_seconds", "Age of the key that signs access tokens now")
                .expect("valid metric");
        registry.register(Box::new(signing_key_age.clone())).expect("registered once");
        Self {
            registry,
            http_requests,
            http_duration,
            sign_ins,
            refreshes,
            refresh_reuse,
            jwks_fetches,
            rate_limited,
            db_pool_connections,
            signing_key_age,
            provider_events,
            backchannel_logouts,
        }
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        // A fixed set of label values: any token is a valid HTTP method, and each new label
        // value would be a new series kept forever.
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration.with_label_values(&labels).observe(seconds);
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encoding into memory");
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
