//! Background work: the sweep of expired records, signing-key reload and rotation, and the
//! revocation at their provider of the tokens deleted users left (`revoke_released`).

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;

use crate::accounts::provider_tokens;
use crate::clients::ClientRegistry;
use crate::config::Settings;
use crate::crypto::keyring::MasterKeyring;
use crate::crypto::signing::{SigningError, SigningKeys};
use crate::db::notify::{Notice, RECONNECTED};
use crate::db::schema::{nonces, used_assertions};
use crate::db::{Db, DbError};
use crate::providers::apple::{Apple, Revoke};
use crate::rate_limits::RateLimits;
use crate::sessions::{devices, liveness, refresh, Liveness};

const SWEEP_EVERY: Duration = Duration::from_secs(300);
const CLIENTS_EVERY: Duration = Duration::from_secs(5);
const KEYS_EVERY: Duration = Duration::from_secs(crate::crypto::signing::KEY_RELOAD_SECS as u64);
/// The longest the revoker sleeps: it also finds releases by other replicas and the CLI.
const REVOKE_EVERY_SECS: i64 = 60;
/// Released tokens claimed per transaction.
const REVOKE_BATCH: i64 = 20;

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
    pub deletion_requests: usize,
}

/// Deletes spent nonces and spent assertions past their expiry, dead refresh tokens, expired
/// browser logins and authorization codes, and devices, audit events and data-deletion
/// requests older than their retention.
pub async fn sweep(
    db: &Db,
    liveness: &Arc<Liveness>,
    retention: Retention,
    now: i64,
) -> Result<Swept, DbError> {
    let liveness = liveness.clone();
    db.write(move |conn| {
        Ok(Swept {
            nonces: diesel::delete(nonces::table.filter(nonces::expires_at.le(now))).execute(conn)?,
            assertions: diesel::delete(used_assertions::table.filter(used_assertions::expires_at.le(now)))
                .execute(conn)?,
            refresh_tokens: refresh::delete_expired(conn, now)?,
            devices: devices::delete_ended(conn, now.saturating_sub(retention.revoked_devices_secs))?,
            audit_events: crate::audit_chain::prune(conn, now.saturating_sub(retention.audit_events_secs))?,
            logins_and_codes: crate::tokens::codes::delete_expired(conn, now)?,
            admin_sessions: crate::admin::sessions::delete_expired(conn, retention.admin_sessions, now)?,
            revocations: liveness::delete_old(conn, &liveness, now)?,
            deletion_requests: crate::service::events::delete_requests_before(
                conn,
                now.saturating_sub(retention.audit_events_secs),
            )?,
        })
    })
    .await
}

/// Picks up keys added by other replicas or the CLI, and adds one when rotation is due.
pub async fn maintain_keys(db: &Db, keys: &Arc<SigningKeys>) -> Result<(), SigningError> {
    let k = keys.clone();
    if let Some(kid) = db.write(move |conn| k.rotate_if_due(conn, crate::clock::now())).await? {
        tracing::info!(%kid, "scheduled signing key rotation: new key published");
    }
    let k = keys.clone();
    db.run(move |conn| k.reload(conn)).await
}

/// What the background loops look after.
pub struct Background {
    pub db: Db,
    pub keys: Arc<SigningKeys>,
    pub rate_limits: Arc<RateLimits>,
    pub clients: Arc<ClientRegistry>,
    pub liveness: Arc<Liveness>,
    pub retention: Retention,
    /// Sign in with Apple, when configured, with the keyring its kept tokens are wrapped by.
    pub apple: Option<(Arc<Apple>, Arc<MasterKeyring>)>,
    /// Back-channel logout notices to deliver.
    pub logouts: crate::backchannel::Sender,
    /// The audit chain's key: new events are sealed with it.
    pub audit_key: Arc<crate::crypto::server_secrets::ServerSecret>,
    /// The users' keys and the blind index, for the search indexer.
    pub user_keys: Arc<crate::crypto::user_keys::UserKeys>,
    pub blind_index: Arc<crate::crypto::blind_index::BlindIndex>,
}

/// How often new audit events are sealed into the chain, and how many at most per write: a
/// write of 200 holds SQLite's writer about 2 ms, so sign-ins queued behind it wait little.
const SEAL_EVERY: Duration = Duration::from_secs(1);
const SEAL_BATCH: i64 = 200;

/// Seals committed audit events into the chain, a batch at a time, every second.
fn seal_audit_events(
    db: &Db,
    key: Arc<crate::crypto::server_secrets::ServerSecret>,
) -> tokio::task::JoinHandle<()> {
    let db = db.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SEAL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            loop {
                // The reading and hashing on a reading connection; only storing the links goes
                // through the writer, like every request's write (on SQLite a second writing
                // connection would make the writer wait in SQLite's busy handler, sleeping
                // milliseconds).
                let k = key.clone();
                let links = db.run(move |conn| crate::audit_chain::link_pending(conn, &k, SEAL_BATCH)).await;
                let sealed = match links {
                    Ok(Some(links)) => {
                        let wanted = links.len();
                        db.write(move |conn| links.store(conn)).await.map(|n| (n, wanted))
                    }
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                match sealed {
                    Ok((n, wanted)) if n == wanted && n == SEAL_BATCH as usize => continue,
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot seal audit events now; will retry");
                        break;
                    }
                }
            }
        }
    })
}

/// How often users whose search terms are stale (new, linked, unlinked) are indexed, and how
/// many at a time: a gentle pace (25 a second at most), so a flood of new users does not hold
/// the database's write lock from sign-ins; a search catches up with up to 500 first.
const INDEX_EVERY: Duration = Duration::from_secs(2);
const INDEX_BATCH: i64 = 50;
/// While the writers were busier than this over the last tick (requests are queueing for
/// them), the indexer waits, for at most this many ticks in a row (it runs on the 15th, 30 s
/// after it last ran): under a sustained
/// load it indexes 50 users every 30 s instead of 25 a second.
const INDEX_YIELDS_ABOVE: f64 = 0.25;
const INDEX_WAITS_AT_MOST: u32 = 14;

/// Whether the indexer waits this tick, given the writers' load over the last one and how many
/// ticks in a row it has waited.
fn index_waits(writers_busy: f64, waited: u32) -> bool {
    writers_busy > INDEX_YIELDS_ABOVE && waited < INDEX_WAITS_AT_MOST
}

/// Writes the search terms of new and changed users (`accounts::search`), one batch a tick,
/// yielding to requests while the writers are busy.
fn index_for_search(
    db: &Db,
    keys: Arc<crate::crypto::user_keys::UserKeys>,
    index: Arc<crate::crypto::blind_index::BlindIndex>,
) -> tokio::task::JoinHandle<()> {
    let db = db.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INDEX_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut last, mut waited) = (db.writer_load(), 0);
        loop {
            tick.tick().await;
            let load = db.writer_load();
            let busy = load.busy_since(&last);
            last = load;
            if index_waits(busy, waited) {
                waited += 1;
                continue;
            }
            waited = 0;
            let (keys, index) = (keys.clone(), index.clone());
            // Through the writer, as the sealer (see there).
            let indexed = db
                .write(move |conn| crate::accounts::search::index_pending(conn, &keys, &index, INDEX_BATCH))
                .await;
            if let Err(e) = indexed {
                tracing::warn!(error = %e, "cannot index users for search now; will retry");
            }
        }
    })
}

/// Runs the loops until the process ends: the sweep, key maintenance, the clients' reload,
/// the revocations' catch-up, and acting on change notices (`follow_changes`).
pub fn spawn(work: Background) -> Vec<tokio::task::JoinHandle<()>> {
    let Background {
        db,
        keys,
        rate_limits,
        clients,
        liveness,
        retention,
        apple,
        logouts,
        audit_key,
        user_keys,
        blind_index,
    } = work;
    let mut tasks = vec![
        follow_changes(&db, &keys, &clients, &liveness),
        crate::backchannel::spawn(logouts),
        seal_audit_events(&db, audit_key),
        index_for_search(&db, user_keys, blind_index),
    ];
    if let Some((apple, keyring)) = apple {
        tasks.push(revoke_released(&db, keyring, apple));
    }
    // Clients made in the admin console on another replica, or disabled there.
    let (clients_db, registry) = (db.clone(), clients.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLIENTS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            crate::service::clients::reload(&clients_db, &registry).await;
        }
    }));
    let (sweeper_db, swept) = (db.clone(), liveness.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tick.tick().await;
            match sweep(&sweeper_db, &swept, retention, crate::clock::now()).await {
                Ok(swept) => tracing::info!(?swept, "sweep done"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    }));
    let (rotator_db, rotated) = (db.clone(), keys.clone());
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(KEYS_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            rate_limits.forget_idle();
            if let Err(e) = maintain_keys(&rotator_db, &rotated).await {
                tracing::warn!(error = %e, "signing key maintenance failed");
            }
        }
    }));
    // Revocations made on other replicas (or by the CLI), in case a notification was lost.
    tasks.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(liveness::CATCH_UP_EVERY);
        loop {
            tick.tick().await;
            let l = liveness.clone();
            if let Err(e) = db.run(move |conn| l.catch_up(conn, crate::clock::now())).await {
                tracing::warn!(error = %e, "cannot catch up on revocations");
            }
        }
    }));
    tasks
}

/// Acts on committed change notices (`db::notify`), this replica's and, on PostgreSQL, every
/// other's (through the listener): revocations go straight into the liveness set (subscribed
/// there); new signing keys and changed clients are reloaded here; after the listener
/// reconnected, all three are read again. On SQLite, revocations by another process (the
/// command line) are found by the liveness watcher.
fn follow_changes(
    db: &Db,
    keys: &Arc<SigningKeys>,
    clients: &Arc<ClientRegistry>,
    liveness: &Arc<Liveness>,
) -> tokio::task::JoinHandle<()> {
    let (notices, mut inbox) = tokio::sync::mpsc::unbounded_channel::<Notice>();
    for topic in [crate::crypto::signing::CHANGED, crate::clients::CHANGED, RECONNECTED] {
        let notices = notices.clone();
        db.subscribers().subscribe(topic, move |notice| {
            let _ = notices.send(notice.clone());
        });
    }
    let watcher = AbortOnDrop(match db.target().backend {
        crate::db::Backend::Postgres => {
            crate::db::notify::spawn_listener(db.direct_url(), db.subscribers().clone())
        }
        crate::db::Backend::Sqlite => liveness::spawn_sqlite_watcher(
            db.target().location.clone(),
            liveness.clone(),
            db.subscribers().clone(),
        ),
    });
    let (db, keys, clients, liveness) = (db.clone(), keys.clone(), clients.clone(), liveness.clone());
    tokio::spawn(async move {
        // Dropped with this task: the listener's thread then ends.
        let _watcher = watcher;
        while let Some(notice) = inbox.recv().await {
            let topic = notice.topic.as_str();
            if topic == RECONNECTED {
                // Whatever was sent while the listener was away: read it from the table.
                let l = liveness.clone();
                if let Err(e) = db.run(move |conn| l.load(conn, crate::clock::now())).await {
                    tracing::warn!(error = %e, "cannot reload revocations after reconnecting");
                }
            }
            if topic == crate::crypto::signing::CHANGED || topic == RECONNECTED {
                let k = keys.clone();
                if let Err(e) = db.run(move |conn| k.reload(conn)).await {
                    tracing::warn!(error = %e, "cannot reload signing keys");
                }
            }
            if topic == crate::clients::CHANGED || topic == RECONNECTED {
                crate::service::clients::reload(&db, &clients).await;
            }
        }
    })
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Revokes at Apple the tokens deleted users left (`accounts::provider_tokens`): at once when
/// a release commits on this replica (its notice), else when the next retry is due, and at
/// least every minute (releases by another replica or by the command line).
fn revoke_released(db: &Db, keyring: Arc<MasterKeyring>, apple: Arc<Apple>) -> tokio::task::JoinHandle<()> {
    let (subscribers, db) = (db.subscribers().clone(), db.clone());
    crate::db::notify::spawn_woken(&subscribers, &[provider_tokens::RELEASED], REVOKE_EVERY_SECS, move || {
        let (db, keyring, apple) = (db.clone(), keyring.clone(), apple.clone());
        async move {
            revoke_due(&db, &keyring, &apple)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "cannot look for provider tokens to revoke"))
                .unwrap_or(None)
        }
    })
}

/// One round of revocations: every released token that is due is claimed (so two replicas do
/// not both send it) and revoked at Apple; a failure is tried again later, backing off.
/// Returns when the next one is due.
pub async fn revoke_due(
    db: &Db,
    keyring: &Arc<MasterKeyring>,
    apple: &Apple,
) -> Result<Option<i64>, DbError> {
    // A read first: an idle replica never writes.
    let next = db.run(provider_tokens::next_due).await?;
    if next.is_none_or(|at| at > crate::clock::now()) {
        return Ok(next);
    }
    loop {
        let ring = keyring.clone();
        let claimed = db
            .write(move |conn| provider_tokens::claim_due(conn, &ring, crate::clock::now(), REVOKE_BATCH))
            .await?;
        if claimed.is_empty() {
            break;
        }
        for release in claimed {
            let outcome = if release.provider == crate::providers::ProviderKind::Apple.as_str() {
                apple.revoke(&release.client_id, &release.token).await
            } else {
                Revoke::Refused
            };
            let (id, attempts, provider) = (release.id, release.attempts, release.provider);
            match outcome {
                Revoke::Done | Revoke::Refused => {
                    if outcome == Revoke::Refused {
                        tracing::warn!(%provider, "the provider refused to revoke a deleted user's token; dropped");
                    } else {
                        tracing::info!(%provider, "a deleted user's provider token is revoked");
                    }
                    db.write(move |conn| provider_tokens::revoked(conn, &id)).await?;
                }
                Revoke::Retry => {
                    let now = crate::clock::now();
                    let kept =
                        db.write(move |conn| provider_tokens::retry_later(conn, &id, attempts, now)).await?;
                    if kept {
                        tracing::warn!(%provider, attempts = attempts + 1, "revoking a deleted user's provider token failed; will retry");
                    } else {
                        tracing::error!(%provider, "revoking a deleted user's provider token kept failing; given up");
                    }
                }
            }
        }
    }
    db.run(provider_tokens::next_due).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexer_yields_to_busy_writers_but_not_for_ever() {
        assert!(!index_waits(0.0, 0), "idle writers: index");
        assert!(!index_waits(INDEX_YIELDS_ABOVE, 0), "a quarter busy: index");
        assert!(index_waits(0.6, 0), "busy writers: wait");
        assert!(index_waits(0.6, INDEX_WAITS_AT_MOST - 1));
        assert!(!index_waits(0.6, INDEX_WAITS_AT_MOST), "waited long enough: index all the same");
    }

    #[tokio::test]
    async fn a_write_shows_in_the_writers_load() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = Db::new(&format!("sqlite://{}/t.db", dir.path().display()), 2).expect("url");
        db.migrate().expect("migrations");
        let before = db.writer_load();
        // The writer adds a batch's time after answering it, before it takes the next: once
        // the second write is answered, the first one's time is in.
        for sql in ["CREATE TABLE t (x INTEGER)", "INSERT INTO t VALUES (1)"] {
            db.write(move |conn| {
                use diesel::connection::SimpleConnection;
                conn.batch_execute(sql).map_err(DbError::from)
            })
            .await
            .expect("written");
        }
        let after = db.writer_load();
        assert!(after.busy_since(&before) > 0.0, "{before:?} {after:?}");
        assert_eq!(after.busy_since(&after), 0.0);
    }
}
