//! Change notices: what a committed write tells this replica and the others.
//!
//! Storage carries notices without knowing what they mean. A write calls [`publish`] with a
//! topic and a body (a revoked device's id, say). The notice is applied here only once the
//! write's transaction committed, whichever `Db` helper ran it (`Db::write` or `Db::run`):
//! the helper hands what the work published on its thread to the [`Subscribers`] after the
//! commit, and drops it on failure. On PostgreSQL the notice also goes out as a `NOTIFY` on
//! [`CHANNEL`] (sent by PostgreSQL at commit), and every replica's listener ([`spawn_listener`])
//! hands it to its own subscribers. Who subscribes (the liveness set, the signing-key cache, the
//! client registry) is decided where the application is built.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel::prelude::*;

use super::{DbConnection, DbError};

/// The NOTIFY channel replicas share.
pub const CHANNEL: &str = "idbridge";
/// Delivered by the listener after it reconnected: notices may have been missed meanwhile.
pub const RECONNECTED: &str = "reconnected";
/// How often the listener looks for notifications.
const LISTEN_POLL: Duration = Duration::from_millis(50);

/// A notice: what changed (`topic`) and which one (`body`, may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub topic: String,
    pub body: String,
}

impl Notice {
    pub fn new(topic: &str, body: &str) -> Self {
        Notice { topic: topic.to_string(), body: body.to_string() }
    }

    /// The NOTIFY payload: `topic` or `topic:body`.
    fn payload(&self) -> String {
        if self.body.is_empty() {
            self.topic.clone()
        } else {
            format!("{}:{}", self.topic, self.body)
        }
    }

    fn parse(payload: &str) -> Self {
        match payload.split_once(':') {
            Some((topic, body)) => Notice::new(topic, body),
            None => Notice::new(payload, ""),
        }
    }
}

thread_local! {
    /// What the work running on this thread published, delivered after its commit.
    static PENDING: RefCell<Vec<Notice>> = const { RefCell::new(Vec::new()) };
}

/// Publishes a notice from inside the caller's transaction: to the other replicas at commit
/// (PostgreSQL), and to this replica's subscribers once the transaction committed.
pub fn publish(conn: &mut DbConnection, topic: &str, body: &str) -> Result<(), DbError> {
    let notice = Notice::new(topic, body);
    if let DbConnection::Pg(c) = conn {
        diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<diesel::sql_types::Text, _>(CHANNEL)
            .bind::<diesel::sql_types::Text, _>(notice.payload())
            .execute(c)?;
    }
    PENDING.with(|p| p.borrow_mut().push(notice));
    Ok(())
}

/// What the work just run on this thread published; clears the list.
pub(super) fn take_pending() -> Vec<Notice> {
    PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

type Handler = Arc<dyn Fn(&Notice) + Send + Sync>;

/// Who wants which topic, on this replica.
#[derive(Clone, Default)]
pub struct Subscribers(Arc<RwLock<HashMap<String, Vec<Handler>>>>);

impl Subscribers {
    /// Calls `handler` with every committed notice on `topic` (from this replica or another).
    /// It runs on the thread that committed or listened: it must be quick and must not block.
    pub fn subscribe(&self, topic: &str, handler: impl Fn(&Notice) + Send + Sync + 'static) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.entry(topic.to_string()).or_default().push(Arc::new(handler));
    }

    pub fn deliver(&self, notices: &[Notice]) {
        if notices.is_empty() {
            return;
        }
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        for notice in notices {
            for handler in map.get(&notice.topic).into_iter().flatten() {
                handler(notice);
            }
        }
    }
}

/// Listens on [`CHANNEL`] on a connection of its own (PostgreSQL), on a thread of its own, and
/// hands every notice to `subscribers`. After the connection broke it reconnects and delivers
/// [`RECONNECTED`]. The thread ends soon after the returned task is aborted or dropped.
pub fn spawn_listener(url: String, subscribers: Subscribers) -> tokio::task::JoinHandle<()> {
    spawn_watcher("pg-listener", move |still_running| {
        let mut first = true;
        while still_running.is_running() {
            let mut conn = match diesel::PgConnection::establish(&url) {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e.to_string().trim(), "the notification listener cannot connect; retrying");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if let Err(e) =
                diesel::connection::SimpleConnection::batch_execute(&mut conn, &format!("LISTEN {CHANNEL}"))
            {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            if !first {
                subscribers.deliver(&[Notice::new(RECONNECTED, "")]);
            }
            first = false;
            'listen: while still_running.is_running() {
                for notification in conn.notifications_iter() {
                    match notification {
                        Ok(n) => subscribers.deliver(&[Notice::parse(&n.payload)]),
                        Err(e) => {
                            tracing::warn!(error = %e, "the notification listener lost its connection");
                            break 'listen;
                        }
                    }
                }
                std::thread::sleep(LISTEN_POLL);
            }
        }
    })
}

/// Whether the task a watcher thread belongs to still runs.
pub struct StillRunning(std::sync::Weak<()>);

impl StillRunning {
    pub fn is_running(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// Runs `round` over and over in a task of its own: at once, again whenever a notice of one of
/// `topics` is delivered (this replica's, after its commit), when the unix second `round`
/// returned comes, and at least every `max_sleep_secs` (a wake-up may be lost). For work that a
/// commit creates and that is done after it: revoking at a provider, back-channel logout.
pub fn spawn_woken<F, Fut>(
    subscribers: &Subscribers,
    topics: &[&str],
    max_sleep_secs: i64,
    mut round: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<i64>> + Send,
{
    let wake = Arc::new(tokio::sync::Notify::new());
    for topic in topics {
        let woken = wake.clone();
        subscribers.subscribe(topic, move |_| woken.notify_one());
    }
    tokio::spawn(async move {
        loop {
            let next = round().await;
            let wait = next.map_or(max_sleep_secs, |at| (at - crate::clock::now()).clamp(0, max_sleep_secs));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(wait as u64)) => {}
                _ = wake.notified() => {}
            }
        }
    })
}

/// Runs `body` on a thread of its own (blocking work: a listening connection, a poll) for as
/// long as the returned task lives: once it is aborted or dropped, `is_running` says so and
/// the thread is expected to end within its poll.
pub fn spawn_watcher(
    name: &str,
    body: impl FnOnce(StillRunning) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let running = Arc::new(());
    let still_running = StillRunning(Arc::downgrade(&running));
    if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(move || body(still_running)) {
        tracing::error!(error = %e, thread = name, "cannot start a watcher thread");
    }
    tokio::spawn(async move {
        let _running = running;
        std::future::pending::<()>().await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        for notice in [Notice::new("revoked", "d1"), Notice::new("keys", "")] {
            assert_eq!(Notice::parse(&notice.payload()), notice);
        }
    }

    #[test]
    fn subscribers_get_their_topic_only() {
        let subscribers = Subscribers::default();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        subscribers.subscribe("revoked", move |n| s.lock().unwrap().push(n.body.clone()));
        subscribers.deliver(&[
            Notice::new("revoked", "a"),
            Notice::new("keys", ""),
            Notice::new("revoked", "b"),
        ]);
        assert_eq!(*seen.lock().unwrap(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn pending_notices_are_taken_once() {
        PENDING.with(|p| p.borrow_mut().push(Notice::new("x", "1")));
        assert_eq!(take_pending(), vec![Notice::new("x", "1")]);
        assert!(take_pending().is_empty());
    }

    /// What a write publishes reaches this replica's subscribers only when it committed:
    /// through `Db::write` or `Db::run`; never from a write that failed or panicked, and
    /// never carried over to the next job on the same thread.
    #[tokio::test]
    async fn notices_arrive_after_a_commit_only_whichever_helper_wrote() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let db = crate::db::Db::new(&format!("sqlite://{}/n.db", dir.path().display()), 1).expect("url");
        db.migrate().expect("migrations");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        db.subscribers().subscribe("t", move |n| s.lock().unwrap().push(n.body.clone()));

        let failed: Result<(), DbError> = db
            .write(|c| {
                publish(c, "t", "failed write")?;
                Err(DbError::Task)
            })
            .await;
        assert!(failed.is_err());
        let panicked: Result<(), DbError> = db
            .write(|c| {
                publish(c, "t", "panicked write")?;
                panic!("a job that panics after publishing")
            })
            .await;
        assert!(panicked.is_err());
        db.write(|c| publish(c, "t", "written")).await.expect("write");
        db.run(|c| publish(c, "t", "ran")).await.expect("run");
        let failed_run: Result<(), DbError> = db
            .run(|c| {
                publish(c, "t", "failed run")?;
                Err(DbError::Task)
            })
            .await;
        assert!(failed_run.is_err());
        db.run(|_| Ok::<_, DbError>(())).await.expect("run");

        assert_eq!(*seen.lock().unwrap(), vec!["written".to_string(), "ran".to_string()]);
    }
}
