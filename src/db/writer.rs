//! Group-committed writes: the writer threads, their batches (a savepoint per job, every
//! answer held until COMMIT), and what a committed job published (`notify`).

use std::sync::Arc;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::ManageConnection;

use super::connect::ConnectionFactory;
use super::health::StorageHealth;
use super::notify::{self, Notice, Subscribers};
use super::{Db, DbConnection, DbError};

/// Most write jobs a writer commits together.
const MAX_BATCH: usize = 64;
/// Writer threads (each with its own connection) on PostgreSQL.
pub(super) const PG_WRITERS: usize = 4;

/// A write job's state: waiting in the queue, taken by a writer, or given up by its caller
/// (who answered 503: it must then never run).
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// A write for the SQLite writer: it runs in a savepoint of the writer's batch transaction.
pub(super) trait BatchedWrite: Send {
    /// Does the work and holds its answer until the batch's fate is known; `None` when its
    /// caller gave up before it started (nothing is done).
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Option<Box<dyn HeldAnswer>>;
    /// No connection could be had.
    fn fail(self: Box<Self>, error: DbError);
}

/// An answer that is sent only once its batch committed (or failed).
pub(super) trait HeldAnswer: Send {
    fn committed(self: Box<Self>);
    fn failed(self: Box<Self>, error: DbError);
}

struct WriteJob<F, T, E> {
    work: F,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    span: tracing::Span,
    subscribers: Subscribers,
    /// [`QUEUED`], [`TAKEN`] or [`ABANDONED`].
    state: Arc<std::sync::atomic::AtomicU8>,
    health: Arc<StorageHealth>,
}

struct Held<T, E> {
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    result: Result<T, E>,
    /// What the job published, delivered to this replica's subscribers once the batch commits.
    published: Vec<Notice>,
    subscribers: Subscribers,
}

impl<F, T, E> BatchedWrite for WriteJob<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Option<Box<dyn HeldAnswer>> {
        use std::sync::atomic::Ordering;
        let WriteJob { work, reply, span, subscribers, state, health } = *self;
        if state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return None;
        }
        // Cleared first (a job that panicked left its notices behind), and taken whatever the
        // outcome, so nothing carries over from one job to the next.
        notify::take_pending();
        let result = span.in_scope(|| write_transaction(conn, work));
        let published = notify::take_pending();
        let published = if result.is_ok() { published } else { Vec::new() };
        health.take_note();
        Some(Box::new(Held { reply, result, published, subscribers }))
    }

    fn fail(self: Box<Self>, error: DbError) {
        let _ = self.reply.send(Err(E::from(error)));
    }
}

impl<T: Send, E: From<DbError> + Send> HeldAnswer for Held<T, E> {
    fn committed(self: Box<Self>) {
        let Held { reply, result, published, subscribers } = *self;
        subscribers.deliver(&published);
        let _ = reply.send(result);
    }

    fn failed(self: Box<Self>, error: DbError) {
        let _ = self.reply.send(Err(self.result.err().unwrap_or_else(|| E::from(error))));
    }
}

/// Writes are group-committed. SQLite allows one writer at a time: every write runs on one
/// thread that owns one connection. PostgreSQL gets a few such threads, each with a connection
/// of its own. Each thread takes the jobs queued together into one transaction (group commit):
/// each job in its own savepoint, so a failing job (a constraint, a deadlock PostgreSQL broke)
/// undoes only itself, and every answer is held until the COMMIT succeeded. `busy` sums the
/// wall time the threads spend on batches, connecting and waiting on locks included
/// (nanoseconds), so background work can yield to requests.
pub(super) fn spawn_writers(
    factory: ConnectionFactory,
    threads: usize,
    health: Arc<StorageHealth>,
    busy: Arc<std::sync::atomic::AtomicU64>,
) -> std::sync::mpsc::Sender<Box<dyn BatchedWrite>> {
    let (jobs, inbox) = std::sync::mpsc::channel::<Box<dyn BatchedWrite>>();
    let inbox = Arc::new(std::sync::Mutex::new(inbox));
    for n in 0..threads {
        let (factory, inbox, health, busy) = (factory.clone(), inbox.clone(), health.clone(), busy.clone());
        std::thread::Builder::new()
            .name(format!("db-writer-{n}"))
            .spawn(move || {
                let mut conn: Option<DbConnection> = None;
                loop {
                    // One thread gathers a batch at a time; the others wait for the next.
                    let batch = {
                        let inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
                        let Ok(first) = inbox.recv() else { return };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match inbox.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    let began = std::time::Instant::now();
                    // A connection that died while idle (the database restarted) shows itself
                    // at BEGIN, before any job ran: the batch gets one fresh connection.
                    let mut batch = Some(batch);
                    for _ in 0..2 {
                        if conn.is_none() {
                            conn = factory.connect().ok();
                        }
                        let (Some(c), Some(jobs)) = (conn.as_mut(), batch.take()) else { break };
                        match commit_batch(c, jobs) {
                            Ok(keep) => {
                                if !keep || factory.has_broken(c) {
                                    conn = None;
                                }
                            }
                            Err(untouched) => {
                                batch = Some(untouched);
                                conn = None;
                            }
                        }
                    }
                    health.take_note();
                    let spent = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    busy.fetch_add(spent, std::sync::atomic::Ordering::Relaxed);
                    if let Some(jobs) = batch {
                        jobs.into_iter().for_each(|job| job.fail(DbError::Unavailable));
                    }
                }
            })
            .expect("spawning a database writer thread");
    }
    jobs
}

/// Runs one batch; `false` when the connection should be replaced. When BEGIN fails on a
/// connection that no longer answers, the jobs come back untouched (nothing ran) to be tried
/// on a fresh one.
fn commit_batch(
    conn: &mut DbConnection,
    batch: Vec<Box<dyn BatchedWrite>>,
) -> Result<bool, Vec<Box<dyn BatchedWrite>>> {
    let begun = match conn {
        // IMMEDIATE: take SQLite's write lock now, not at the first write of some job.
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c),
    };
    if let Err(e) = begun {
        let error = DbError::from(e);
        if conn.batch_execute("SELECT 1").is_err() {
            return Err(batch);
        }
        let retry_later = matches!(error, DbError::Unavailable) || matches!(conn, DbConnection::Pg(_));
        batch
            .into_iter()
            .for_each(|job| job.fail(if retry_later { DbError::Unavailable } else { DbError::Task }));
        return Ok(false);
    }
    let mut held = Vec::with_capacity(batch.len());
    for job in batch {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn))) {
            Ok(Some(answer)) => held.push(answer),
            Ok(None) => {}
            Err(_) => {
                // The jobs not yet run are dropped: their callers see a failed task.
                rollback_batch(conn, held, DbError::Task);
                return Ok(false);
            }
        }
    }
    let committed = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::commit_transaction(c),
        DbConnection::Pg(c) => AnsiTransactionManager::commit_transaction(c),
    };
    match committed {
        Ok(()) => {
            held.into_iter().for_each(|answer| answer.committed());
            Ok(true)
        }
        Err(e) => {
            tracing::error!(error = %e, "batch commit failed");
            // A full disk, a read-only database, a connection that died mid-batch: nothing was
            // committed and the callers may retry (503). Anything else is a failure of ours.
            let why = match DbError::from(e) {
                DbError::Unavailable => DbError::Unavailable,
                _ if conn.batch_execute("SELECT 1").is_err() => DbError::Unavailable,
                _ => DbError::Task,
            };
            rollback_batch(conn, held, why);
            Ok(false)
        }
    }
}

fn rollback_batch(conn: &mut DbConnection, held: Vec<Box<dyn HeldAnswer>>, why: DbError) {
    let _ = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::rollback_transaction(c),
        DbConnection::Pg(c) => AnsiTransactionManager::rollback_transaction(c),
    };
    let unavailable = matches!(why, DbError::Unavailable);
    held.into_iter()
        .for_each(|answer| answer.failed(if unavailable { DbError::Unavailable } else { DbError::Task }));
}

impl Db {
    /// Runs `f` atomically: its writes are committed when it returns `Ok` and undone otherwise,
    /// and its result is handed back only after the commit. A job still queued after
    /// `statement_timeout` (the writers stalled on the database) is withdrawn and answered
    /// `Unavailable`: it never runs. Once a writer has taken it, its true outcome is awaited.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let (state, answer) = self.submit(f)?;
        tokio::pin!(answer);
        match tokio::time::timeout(self.options.statement_timeout, &mut answer).await {
            Ok(outcome) => outcome.map_err(|_| E::from(DbError::Task))?,
            Err(_) => {
                if state.compare_exchange(QUEUED, ABANDONED, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                    return Err(E::from(DbError::Unavailable));
                }
                answer.await.map_err(|_| E::from(DbError::Task))?
            }
        }
    }

    /// Queues a write job; returns its state and where its answer arrives.
    #[allow(clippy::type_complexity)]
    pub(super) fn submit<T, E, F>(
        &self,
        f: F,
    ) -> Result<(Arc<std::sync::atomic::AtomicU8>, tokio::sync::oneshot::Receiver<Result<T, E>>), E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let state = Arc::new(std::sync::atomic::AtomicU8::new(QUEUED));
        let job = WriteJob {
            work: f,
            reply,
            span: tracing::Span::current(),
            subscribers: self.subscribers.clone(),
            state: state.clone(),
            health: self.health.clone(),
        };
        self.writer.send(Box::new(job)).map_err(|_| E::from(DbError::Task))?;
        Ok((state, answer))
    }
}

pub(super) fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DbError>,
{
    // Inside a writer's batch transaction, a savepoint; a BEGIN when run on its own.
    let begin = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction(c),
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c),
    };
    begin.map_err(|e| E::from(e.into()))?;
    match f(conn) {
        Ok(value) => {
            let commit = match conn {
                DbConnection::Sqlite(c) => AnsiTransactionManager::commit_transaction(c),
                DbConnection::Pg(c) => AnsiTransactionManager::commit_transaction(c),
            };
            commit.map_err(|e| E::from(e.into()))?;
            Ok(value)
        }
        Err(e) => {
            let _ = match conn {
                DbConnection::Sqlite(c) => AnsiTransactionManager::rollback_transaction(c),
                DbConnection::Pg(c) => AnsiTransactionManager::rollback_transaction(c),
            };
            Err(e)
        }
    }
}
