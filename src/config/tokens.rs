//! `[keys]` and `[tokens]`: what signs access tokens, and how long tokens and device sessions
//! live.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    ES256,
    EdDSA,
    RS256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub master_keys: Vec<String>,
    #[serde(default = "default_alg")]
    pub access_token_alg: SigningAlg,
    #[serde(default = "default_rotation", deserialize_with = "duration")]
    pub signing_key_rotation: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Empty means `server.public_url` + `/api`.
    #[serde(default)]
    pub audience: String,
    #[serde(default = "default_access_ttl", deserialize_with = "duration")]
    pub access_ttl: Duration,
    #[serde(default = "default_idle_ttl", deserialize_with = "duration")]
    pub refresh_idle_ttl: Duration,
    #[serde(default = "default_max_ttl", deserialize_with = "duration")]
    pub refresh_max_ttl: Duration,
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub refresh_reuse_grace: Duration,
    /// Live devices a user may have; a sign-in past it ends the longest-idle one.
    #[serde(default = "default_max_devices")]
    pub max_devices_per_user: u32,
    /// DPoP server nonces (RFC 9449 §8): every proof must carry a nonce idbridge issued.
    #[serde(default)]
    pub dpop_nonce: bool,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            audience: String::new(),
            access_ttl: default_access_ttl(),
            refresh_idle_ttl: default_idle_ttl(),
            refresh_max_ttl: default_max_ttl(),
            refresh_reuse_grace: default_grace(),
            max_devices_per_user: default_max_devices(),
            dpop_nonce: false,
        }
    }
}

fn default_alg() -> SigningAlg {
    SigningAlg::ES256
}
fn default_rotation() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_access_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_idle_ttl() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_max_devices() -> u32 {
    100
}
