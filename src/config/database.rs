//! `[database]` and `[retention]`: the connection pool, and how long records of ended things
//! are kept.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "yes")]
    pub auto_migrate: bool,
    /// PostgreSQL: how long connecting may take.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// PostgreSQL: the longest a statement may run; also how long a request waits for a
    /// connection or for its write to start before it is answered 503.
    #[serde(default = "default_statement_timeout", deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// PostgreSQL: `false` behind a transaction-mode pooler (no named prepared statements).
    #[serde(default = "yes")]
    pub prepared_statements: bool,
    /// PostgreSQL: a direct URL for `LISTEN` and the migrations' lock, needed when `url` goes
    /// through a transaction-mode pooler.
    #[serde(default)]
    pub listen_url: String,
}

impl DatabaseSettings {
    /// How the pool connects and how long it waits.
    pub fn options(&self) -> crate::db::DbOptions {
        crate::db::DbOptions {
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            prepared_statements: self.prepared_statements,
            listen_url: (!self.listen_url.is_empty()).then(|| self.listen_url.clone()),
        }
    }
}

/// How long records of ended things are kept before the sweep deletes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(default = "default_audit_retention", deserialize_with = "duration")]
    pub audit_events: Duration,
    /// Revoked devices, and devices whose session passed `refresh_max_ttl`.
    #[serde(default = "default_device_retention", deserialize_with = "duration")]
    pub revoked_devices: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { audit_events: default_audit_retention(), revoked_devices: default_device_retention() }
    }
}

fn default_max_connections() -> u32 {
    16
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}
fn default_audit_retention() -> Duration {
    Duration::from_secs(365 * 86_400)
}
fn default_device_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}
