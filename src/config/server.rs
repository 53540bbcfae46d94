//! `[server]`, `[rate_limits]`, `[admin]` and `[dev]`: where the service listens and how its
//! endpoints and console are guarded.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(default = "default_bind")]
    pub bind: String,
    pub public_url: String,
}

/// Requests per second on `/oauth/token`, `/nonce`, `/introspect` and `/revoke`; 0 turns a
/// limit off. Bursts of twice the rate pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Per peer address: requests of public clients and failed client authentications.
    #[serde(default = "default_per_ip")]
    pub per_ip_per_second: u32,
    /// Per authenticated confidential client.
    #[serde(default = "default_per_client")]
    pub per_client_per_second: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { per_ip_per_second: default_per_ip(), per_client_per_second: default_per_client() }
    }
}

/// The admin console's sessions (`/admin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// A session unused this long ends.
    #[serde(default = "default_admin_idle", deserialize_with = "duration")]
    pub session_idle_ttl: Duration,
    /// No session outlives this.
    #[serde(default = "default_admin_max", deserialize_with = "duration")]
    pub session_max_ttl: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self { session_idle_ttl: default_admin_idle(), session_max_ttl: default_admin_max() }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSettings {
    #[serde(default)]
    pub enabled: bool,
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_per_ip() -> u32 {
    100
}
fn default_per_client() -> u32 {
    5000
}
fn default_admin_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_admin_max() -> Duration {
    Duration::from_secs(12 * 3600)
}
