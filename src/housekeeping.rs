//! Background work: the sweep of expired records, and signing-key reload and rotation.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;

use crate::crypto::signing::{SigningError, SigningKeys};
use crate::db::schema::{nonces, used_assertions};
use crate::db::{self, Db, DbError};
use crate::tokens::refresh;

const SWEEP_EVERY: Duration = Duration::from_secs(300);
const KEYS_EVERY: Duration = Duration::from_secs(crate::crypto::signing::KEY_RELOAD_SECS as u64);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub nonces: usize,
    pub assertions: usize,
    pub refresh_tokens: usize,
}

/// Deletes expired nonces, spent assertions past their token's expiry, and dead refresh tokens.
pub async fn sweep(db: &Db) -> Result<Swept, DbError> {
    db.write(|conn| {
        let now = db::now();
        Ok(Swept {
            nonces: diesel::delete(nonces::table.filter(nonces::expires_at.le(now))).execute(conn)?,
            assertions: diesel::delete(used_assertions::table.filter(used_assertions::expires_at.le(now)))
                .execute(conn)?,
            refresh_tokens: refresh::delete_expired(conn, now)?,
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
pub fn spawn(db: Db, keys: Arc<SigningKeys>) -> Vec<tokio::task::JoinHandle<()>> {
    let sweeper_db = db.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            match sweep(&sweeper_db).await {
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
            if let Err(e) = maintain_keys(&db, &keys).await {
                tracing::warn!(error = %e, "signing key maintenance failed");
            }
        }
    });
    vec![sweeper, rotator]
}
