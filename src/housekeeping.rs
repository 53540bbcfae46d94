//! Background work: the sweep of expired records, and signing-key reload and rotation.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;

use crate::accounts::{self, audit};
use crate::clients::ClientRegistry;
use crate::config::Settings;
use crate::crypto::signing::{SigningError, SigningKeys};
use crate::db::schema::{nonces, used_assertions};
use crate::db::{self, Db, DbError};
use crate::http::limits::RateLimits;
use crate::tokens::refresh;

const SWEEP_EVERY: Duration = Duration::from_secs(300);
const CLIENTS_EVERY: Duration = Duration::from_secs(5);
const KEYS_EVERY: Duration = Duration::from_secs(crate::crypto::signing::KEY_RELOAD_SECS as u64);

/// How long ended things are kept (`[retention]`), in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit_events_secs: i64,
    pub revoked_devices_secs: i64,
    pub admin_sessions: crate::admin::sessions::SessionPolicy,
}

impl Retention {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            audit_events_secs: settings.retention.audit_events.as_secs() as i64,
            revoked_devices_secs: settings.retention.revoked_devices.as_secs() as i64,
            admin_sessions: crate::admin::sessions::SessionPolicy {
                idle_secs: settings.admin.session_idle_ttl.as_secs() as i64,
                max_secs: settings.admin.session_max_ttl.as_secs() as i64,
            },
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub nonces: usize,
    pub assertions: usize,
    pub refresh_tokens: usize,
    pub devices: usize,
    pub audit_events: usize,
    pub logins_and_codes: usize,
    pub admin_sessions: usize,
    pub revocations: usize,
}

/// Deletes spent nonces and spent assertions past their expiry, dead refresh tokens, expired
/// browser logins and authorization codes, and devices and audit events older than their
/// retention.
pub async fn sweep(db: &Db, retention: Retention, now: i64) -> Result<Swept, DbError> {
    let liveness = db.liveness().clone();
    db.write(move |conn| {
        Ok(Swept {
            nonces: diesel::delete(nonces::table.filter(nonces::expires_at.le(now))).execute(conn)?,
            assertions: diesel::delete(used_assertions::table.filter(used_assertions::expires_at.le(now)))
                .execute(conn)?,
            refresh_tokens: refresh::delete_expired(conn, now)?,
            devices: accounts::delete_ended_devices(
                conn,
                now.saturating_sub(retention.revoked_devices_secs),
            )?,
            audit_events: audit::delete_older_than(conn, now.saturating_sub(retention.audit_events_secs))?,
            logins_and_codes: crate::tokens::codes::delete_expired(conn, now)?,
            admin_sessions: crate::admin::sessions::delete_expired(conn, retention.admin_sessions, now)?,
            revocations: crate::tokens::liveness::delete_old(conn, &liveness, now)?,
        })
    })
    .await
}

/// Picks up keys added by other replicas or the CLI, and adds one when rotation is due.
pub async fn maintain_keys(db: &Db, keys: &Arc<SigningKeys>) -> Result<(), SigningError> {
    let k = keys.clone();
    if let Some(kid) = db.write(move |conn| k.rotate_if_due(conn, db::now())).await? {
        tracing::info!(%kid, "scheduled signing key rotation: new key published");
    }
    let k = keys.clone();
    db.run(move |conn| k.reload(conn)).await
}

/// Runs both loops until the process ends.
pub fn spawn(
    db: Db,
    keys: Arc<SigningKeys>,
    rate_limits: Arc<RateLimits>,
    clients: Arc<ClientRegistry>,
    retention: Retention,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Clients made in the admin console on another replica, or disabled there.
    let clients_db = db.clone();
    let client_loader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLIENTS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let registry = clients.clone();
            if let Err(e) = clients_db.run(move |conn| registry.reload_stored(conn)).await {
                tracing::warn!(error = %e, "cannot reload stored clients");
            }
        }
    });
    let sweeper_db = db.clone();
    let liveness_db = db.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            match sweep(&sweeper_db, retention, db::now()).await {
                Ok(swept) => tracing::info!(?swept, "sweep done"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    });
    let rotator = tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEYS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            rate_limits.forget_idle();
            if let Err(e) = maintain_keys(&db, &keys).await {
                tracing::warn!(error = %e, "signing key maintenance failed");
            }
        }
    });
    // Revocations made on other replicas (or by the CLI), in case a notification was lost.
    let catch_up_db = liveness_db;
    let catch_up = tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::tokens::liveness::CATCH_UP_EVERY);
        loop {
            tick.tick().await;
            let liveness = catch_up_db.liveness().clone();
            if let Err(e) = catch_up_db.run(move |conn| liveness.catch_up(conn, db::now())).await {
                tracing::warn!(error = %e, "cannot catch up on revocations");
            }
        }
    });
    vec![sweeper, rotator, client_loader, catch_up]
}

/// PostgreSQL: listens for other replicas' revocations (applied on the listener thread), new
/// signing keys and changed clients (reloaded here).
pub fn follow_other_replicas(
    db: Db,
    keys: Arc<SigningKeys>,
    clients: Arc<ClientRegistry>,
) -> tokio::task::JoinHandle<()> {
    use crate::tokens::liveness::{spawn_listener, Notice};
    let (notices, mut inbox) = tokio::sync::mpsc::unbounded_channel();
    spawn_listener(db.direct_url(), db.liveness().clone(), notices);
    tokio::spawn(async move {
        while let Some(notice) = inbox.recv().await {
            match notice {
                Notice::KeysChanged => {
                    let k = keys.clone();
                    if let Err(e) = db.run(move |conn| k.reload(conn)).await {
                        tracing::warn!(error = %e, "cannot reload signing keys");
                    }
                }
                Notice::ClientsChanged => {
                    let registry = clients.clone();
                    if let Err(e) = db.run(move |conn| registry.reload_stored(conn)).await {
                        tracing::warn!(error = %e, "cannot reload stored clients");
                    }
                }
                Notice::Revoked(_) => {}
            }
        }
    })
}
