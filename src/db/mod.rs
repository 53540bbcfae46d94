//! Storage: one r2d2 pool of [`DbConnection`]s over PostgreSQL or SQLite, the embedded
//! migrations, and the helpers that run blocking diesel work off the async runtime.
//!
//! SQLite runs with `secure_delete`, so a deleted row (a deleted user's wrapped data keys) is
//! overwritten in the database file rather than left in a free page.
//!
//! Backend differences live here and nowhere else: connection set-up (SQLite pragmas), how
//! writes run (group commit on both: one writer thread on SQLite with `BEGIN IMMEDIATE`, a few
//! on PostgreSQL; a savepoint per write), and the migration lock (PostgreSQL).

pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tracing::Instrument;

use crate::tokens::liveness::{take_pending, Liveness};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Arbitrary constant naming idbridge's migration lock among PostgreSQL advisory locks.
const MIGRATION_LOCK_ID: i64 = 0x1db_1d6e;

#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Where the database lives, parsed from `database.url`.
#[derive(Clone, Debug)]
pub struct DbTarget {
    pub backend: Backend,
    /// A libpq URL, or a SQLite file path.
    pub location: String,
}

impl DbTarget {
    /// `sqlite://relative/path`, `sqlite:///absolute/path`, `postgres://…`, `postgresql://…`.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("a sqlite URL needs a file path".into());
            }
            Ok(Self { backend: Backend::Sqlite, location: path.to_string() })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self { backend: Backend::Postgres, location: url.to_string() })
        } else {
            Err("must start with sqlite:// or postgres://".into())
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the database is unavailable")]
    Unavailable,
    #[error("database error: {0}")]
    Query(DieselError),
    #[error("database task failed")]
    Task,
}

impl From<DieselError> for DbError {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::BrokenTransactionManager => DbError::Unavailable,
            // SQLITE_BUSY after busy_timeout: another process holds the write lock.
            DieselError::DatabaseError(_, ref info) if info.message().contains("database is locked") => {
                DbError::Unavailable
            }
            other => DbError::Query(other),
        }
    }
}

/// Opens connections for the pool; never guesses the backend from a failed attempt.
#[derive(Clone)]
pub struct ConnectionFactory {
    target: DbTarget,
}

impl ConnectionFactory {
    /// `true` when the connection still answers a query.
    fn answers(&self, conn: &mut DbConnection) -> bool {
        conn.batch_execute("SELECT 1").is_ok()
    }
}

/// Tests every idle connection once and replaces the dead ones (after the database came back).
/// One pass at a time.
fn heal_idle_connections(
    pool: &Pool<ConnectionFactory>,
    factory: &ConnectionFactory,
    healing: &Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::Ordering;
    if healing.swap(true, Ordering::AcqRel) {
        return;
    }
    let (pool, factory, flag) = (pool.clone(), factory.clone(), healing.clone());
    let spawned = std::thread::Builder::new().name("db-heal".into()).spawn(move || {
        let idle = pool.state().idle_connections;
        // Held together, so each idle connection is tested once.
        let mut held = Vec::new();
        for _ in 0..idle {
            match pool.try_get() {
                Some(mut conn) => {
                    if !factory.answers(&mut conn) {
                        if let Ok(fresh) = factory.connect() {
                            *conn = fresh;
                        }
                    }
                    held.push(conn);
                }
                None => break,
            }
        }
        drop(held);
        flag.store(false, Ordering::Release);
    });
    if spawned.is_err() {
        healing.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl ManageConnection for ConnectionFactory {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        match self.target.backend {
            Backend::Postgres => PgConnection::establish(&self.target.location)
                .map(DbConnection::Pg)
                .map_err(diesel::r2d2::Error::ConnectionError),
            Backend::Sqlite => {
                let mut conn = SqliteConnection::establish(&self.target.location)
                    .map_err(diesel::r2d2::Error::ConnectionError)?;
                conn.batch_execute(
                    "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
                )
                .map_err(diesel::r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.batch_execute("SELECT 1").map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        match conn {
            DbConnection::Pg(c) => c.is_broken(),
            DbConnection::Sqlite(c) => c.is_broken(),
        }
    }
}

/// Most write jobs a writer commits together.
const MAX_BATCH: usize = 64;
/// Writer threads (each with its own connection) on PostgreSQL.
const PG_WRITERS: usize = 4;

/// A write for the SQLite writer: it runs in a savepoint of the writer's batch transaction.
trait BatchedWrite: Send {
    /// Does the work and holds its answer until the batch's fate is known.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Box<dyn HeldAnswer>;
    /// No connection could be had.
    fn fail(self: Box<Self>, error: DbError);
}

/// An answer that is sent only once its batch committed (or failed).
trait HeldAnswer: Send {
    fn committed(self: Box<Self>);
    fn failed(self: Box<Self>, error: DbError);
}

struct WriteJob<F, T, E> {
    work: F,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    span: tracing::Span,
    liveness: Arc<Liveness>,
}

struct Held<T, E> {
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
    result: Result<T, E>,
    /// Devices the job revoked, applied to this replica's set once the batch commits.
    revoked: Vec<(String, i64)>,
    liveness: Arc<Liveness>,
}

impl<F, T, E> BatchedWrite for WriteJob<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Box<dyn HeldAnswer> {
        let WriteJob { work, reply, span, liveness } = *self;
        let result = span.in_scope(|| write_transaction(conn, work));
        // Taken whatever the outcome, so nothing carries over to the next job.
        let revoked = take_pending();
        let revoked = if result.is_ok() { revoked } else { Vec::new() };
        Box::new(Held { reply, result, revoked, liveness })
    }

    fn fail(self: Box<Self>, error: DbError) {
        let _ = self.reply.send(Err(E::from(error)));
    }
}

impl<T: Send, E: From<DbError> + Send> HeldAnswer for Held<T, E> {
    fn committed(self: Box<Self>) {
        let Held { reply, result, revoked, liveness } = *self;
        liveness.add(revoked);
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
/// undoes only itself, and every answer is held until the COMMIT succeeded.
fn spawn_writers(
    factory: ConnectionFactory,
    threads: usize,
) -> std::sync::mpsc::Sender<Box<dyn BatchedWrite>> {
    let (jobs, inbox) = std::sync::mpsc::channel::<Box<dyn BatchedWrite>>();
    let inbox = Arc::new(std::sync::Mutex::new(inbox));
    for n in 0..threads {
        let (factory, inbox) = (factory.clone(), inbox.clone());
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
                    if conn.is_none() {
                        conn = factory.connect().ok();
                    }
                    let Some(c) = conn.as_mut() else {
                        batch.into_iter().for_each(|job| job.fail(DbError::Unavailable));
                        continue;
                    };
                    if !commit_batch(c, batch) || factory.has_broken(c) {
                        conn = None;
                    }
                }
            })
            .expect("spawning a database writer thread");
    }
    jobs
}

/// Runs one batch; `false` when the connection should be replaced.
fn commit_batch(conn: &mut DbConnection, batch: Vec<Box<dyn BatchedWrite>>) -> bool {
    let begun = match conn {
        // IMMEDIATE: take SQLite's write lock now, not at the first write of some job.
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        DbConnection::Pg(c) => AnsiTransactionManager::begin_transaction(c),
    };
    if let Err(e) = begun {
        let error = DbError::from(e);
        let retry_later = matches!(error, DbError::Unavailable) || matches!(conn, DbConnection::Pg(_));
        batch
            .into_iter()
            .for_each(|job| job.fail(if retry_later { DbError::Unavailable } else { DbError::Task }));
        return false;
    }
    let mut held = Vec::with_capacity(batch.len());
    for job in batch {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn))) {
            Ok(answer) => held.push(answer),
            Err(_) => {
                // The jobs not yet run are dropped: their callers see a failed task.
                rollback_batch(conn, held, DbError::Task);
                return false;
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
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "batch commit failed");
            // A connection that died mid-batch: the callers may retry.
            let why =
                if conn.batch_execute("SELECT 1").is_err() { DbError::Unavailable } else { DbError::Task };
            rollback_batch(conn, held, why);
            false
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

/// The pool plus what a caller needs to run work on it.
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionFactory>,
    /// Bounds blocking threads to the pool size, so a burst queues here instead of parking
    /// hundreds of threads on the pool.
    permits: Arc<tokio::sync::Semaphore>,
    /// The group-committing writer threads (see `spawn_writers`).
    writer: std::sync::mpsc::Sender<Box<dyn BatchedWrite>>,
    factory: ConnectionFactory,
    /// Devices revoked recently: access tokens are checked against this, not the database.
    liveness: Arc<Liveness>,
    /// A pass over the idle connections is running (see `heal_idle_connections`).
    healing: Arc<std::sync::atomic::AtomicBool>,
}

impl Db {
    /// Builds the pool without connecting, so a database that goes away later is retried.
    /// A new SQLite database is created `0600` in a `0700` directory: its WAL and SHM files
    /// take the database file's mode.
    pub fn new(url: &str, max_connections: u32) -> Result<Self, String> {
        let target = DbTarget::parse(url)?;
        if target.backend == Backend::Sqlite {
            create_private_sqlite_file(std::path::Path::new(&target.location))?;
        }
        let backend = target.backend;
        let factory = ConnectionFactory { target };
        let writer = spawn_writers(factory.clone(), if backend == Backend::Sqlite { 1 } else { PG_WRITERS });
        let max_connections = max_connections.max(1);
        let pool = Pool::builder()
            .max_size(max_connections)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(3))
            .test_on_check_out(false)
            .build_unchecked(factory.clone());
        let permits = Arc::new(tokio::sync::Semaphore::new(max_connections as usize));
        Ok(Self {
            pool,
            permits,
            writer,
            factory,
            liveness: Arc::new(Liveness::default()),
            healing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// The devices revoked recently, kept current by every write that revokes (see
    /// `tokens::liveness`).
    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// The backend and its URL, for a connection of one's own (the notification listener).
    pub fn target(&self) -> &DbTarget {
        &self.factory.target
    }

    /// Opens one connection outside the pool, for a clear error at start when the database
    /// cannot be reached at all.
    pub fn check_reachable(&self) -> Result<(), String> {
        self.factory.connect().map(drop).map_err(|e| match e {
            diesel::r2d2::Error::ConnectionError(c) => c.to_string().trim().to_string(),
            other => other.to_string(),
        })
    }

    /// Runs `f` with a pooled connection on the blocking pool, inside the caller's span.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let permit = self.permits.clone().acquire_owned().await.map_err(|_| E::from(DbError::Task))?;
        let pool = self.pool.clone();
        let factory = self.factory.clone();
        let healing = self.healing.clone();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permit = permit;
            let mut conn = pool.get().map_err(|_| DbError::Unavailable)?;
            let result = f(&mut conn);
            // Connections are not tested on checkout (a round trip per request): a dead one
            // shows itself by failing. It is replaced, the request answers "unavailable", and
            // the other idle connections are tested once in the background.
            if result.is_err() && factory.target.backend == Backend::Postgres && !factory.answers(&mut conn) {
                if let Ok(fresh) = factory.connect() {
                    *conn = fresh;
                }
                drop(conn);
                heal_idle_connections(&pool, &factory, &healing);
                return Err(E::from(DbError::Unavailable));
            }
            result
        });
        task.in_current_span().await.map_err(|_| E::from(DbError::Task))?
    }

    /// Runs `f` atomically: its writes are committed when it returns `Ok` and undone otherwise,
    /// and its result is handed back only after the commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let liveness = self.liveness.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = WriteJob { work: f, reply, span: tracing::Span::current(), liveness };
        self.writer.send(Box::new(job)).map_err(|_| E::from(DbError::Task))?;
        answer.await.map_err(|_| E::from(DbError::Task))?
    }

    /// A pooled connection for synchronous callers (the CLI and unit tests).
    pub fn get(&self) -> Result<diesel::r2d2::PooledConnection<ConnectionFactory>, DbError> {
        self.pool.get().map_err(|_| DbError::Unavailable)
    }

    /// Connections the pool holds, and how many of them are idle.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
    }

    /// `true` when a connection can be had and answers.
    pub async fn ping(&self) -> bool {
        self.run(|conn| conn.batch_execute("SELECT 1").map_err(DbError::from)).await.is_ok()
    }

    /// Applies pending migrations; on PostgreSQL under an advisory lock so replicas can start together.
    pub fn migrate(&self) -> Result<usize, String> {
        let mut conn = self.pool.get().map_err(|e| format!("cannot connect to the database: {e}"))?;
        run_migrations(&mut conn)
    }
}

fn create_private_sqlite_file(path: &std::path::Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.as_os_str() == ":memory:" || path.exists() {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map(drop).map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
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

fn run_migrations(conn: &mut DbConnection) -> Result<usize, String> {
    let describe = |e: Box<dyn std::error::Error + Send + Sync>| format!("migration failed: {e}");
    match conn {
        DbConnection::Sqlite(c) => {
            c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()).map_err(describe)
        }
        DbConnection::Pg(c) => {
            let lock = format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})");
            c.batch_execute(&lock).map_err(|e| format!("cannot take the migration lock: {e}"))?;
            let applied = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()).map_err(describe);
            let unlock = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})");
            let _ = c.batch_execute(&unlock);
            applied
        }
    }
}

/// Serialises a critical section across replicas inside a write transaction (PostgreSQL);
/// SQLite's `BEGIN IMMEDIATE` already does.
pub fn lock_for_transaction(conn: &mut DbConnection, lock_id: i64) -> Result<(), DbError> {
    if let DbConnection::Pg(c) = conn {
        c.batch_execute(&format!("SELECT pg_advisory_xact_lock({lock_id})"))?;
    }
    Ok(())
}

/// Stores rewrapped user keys `(user_id, version, wrapped)`, all now wrapped by `wrapped_by`.
/// PostgreSQL takes the batch in one statement (arrays through `unnest`); SQLite, whose
/// statements cost no round trip, one `UPDATE` per row.
pub fn store_rewrapped_user_keys(
    conn: &mut DbConnection,
    rows: &[(String, i32, Vec<u8>)],
    wrapped_by: &str,
) -> Result<(), DbError> {
    use diesel::prelude::*;
    use diesel::sql_types::{Array, Binary, Integer, Text};

    use schema::user_keys;
    match conn {
        DbConnection::Pg(c) => {
            let users: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let versions: Vec<i32> = rows.iter().map(|r| r.1).collect();
            let wrapped: Vec<&[u8]> = rows.iter().map(|r| r.2.as_slice()).collect();
            diesel::sql_query(
                "UPDATE user_keys AS k SET wrapped = v.wrapped, wrapped_by = $4 \
                 FROM unnest($1::text[], $2::int[], $3::bytea[]) AS v(user_id, version, wrapped) \
                 WHERE k.user_id = v.user_id AND k.version = v.version",
            )
            .bind::<Array<Text>, _>(users)
            .bind::<Array<Integer>, _>(versions)
            .bind::<Array<Binary>, _>(wrapped)
            .bind::<Text, _>(wrapped_by)
            .execute(c)?;
        }
        DbConnection::Sqlite(c) => {
            for (user_id, version, wrapped) in rows {
                diesel::update(user_keys::table.find((user_id, version)))
                    .set((user_keys::wrapped.eq(wrapped), user_keys::wrapped_by.eq(wrapped_by)))
                    .execute(c)?;
            }
        }
    }
    Ok(())
}

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A new row id: a UUIDv7, time-ordered so inserts land at the right edge of each index
/// instead of on a random page.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
