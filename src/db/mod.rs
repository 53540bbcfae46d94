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
            DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ReadOnlyTransaction,
                _,
            )
            | DieselError::BrokenTransactionManager => DbError::Unavailable,
            DieselError::DatabaseError(_, ref info) if is_unavailable(info.message()) => {
                if is_storage_refusal(info.message()) {
                    STORAGE_REFUSED.with(|noted| noted.set(true));
                }
                DbError::Unavailable
            }
            other => DbError::Query(other),
        }
    }
}

/// The signs of a database that cannot store anything now: full, or read-only (SQLite's
/// SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY; PostgreSQL's 53100 disk_full and 25006
/// read_only_sql_transaction).
fn is_storage_refusal(message: &str) -> bool {
    const SIGNS: &[&str] = &[
        "database or disk is full",
        "disk I/O error",
        "attempt to write a readonly database",
        "No space left on device",
        "could not extend file",
        "could not write",
        "read-only transaction",
    ];
    SIGNS.iter().any(|sign| message.contains(sign))
}

thread_local! {
    /// Set when the database refused a write on this thread for want of space or because it is
    /// read-only; taken into the database's [`StorageHealth`] after each job.
    static STORAGE_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long `/readyz` says "not ready" after the database refused a write for want of space
/// (or because it is read-only); then it is tried again (writes are never held back by this).
const STORAGE_REFUSAL_MEMORY_SECS: i64 = 5;
/// Free space below which a SQLite database's filesystem counts as full.
const SQLITE_MIN_FREE_BYTES: u64 = 512 * 1024;

/// When the database last refused a write for want of space or because it is read-only.
#[derive(Default)]
pub struct StorageHealth {
    refused_at: std::sync::atomic::AtomicI64,
}

impl StorageHealth {
    /// Takes what this thread noted while running a job.
    fn take_note(&self) {
        if STORAGE_REFUSED.with(|noted| noted.replace(false)) {
            self.refused_at.store(now(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn refused_recently(&self, now: i64) -> bool {
        let at = self.refused_at.load(std::sync::atomic::Ordering::Relaxed);
        at > 0 && now - at < STORAGE_REFUSAL_MEMORY_SECS
    }
}

/// Free bytes on the filesystem holding `path` (its folder when it does not exist yet).
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if path.exists() { path } else { path.parent().filter(|p| !p.as_os_str().is_empty())? };
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into `stats`, a plain C struct; `c_path` is NUL-terminated.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let status = unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) };
    (status == 0).then_some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// What the database says when it cannot take the work now, through no fault of the request:
/// a full disk, a read-only file or replica, a statement cancelled by `statement_timeout`, a
/// server shutting down, SQLite's write lock held past `busy_timeout`. The answer is 503 with
/// `Retry-After`, never 500.
fn is_unavailable(message: &str) -> bool {
    // Beyond a full or read-only database (`is_storage_refusal`): SQLite's write lock held past
    // busy_timeout, a file that cannot be opened; PostgreSQL's 57014 query_canceled, 57P01..57P03
    // shutdown and start-up, 53300 too_many_connections, 53200 out_of_memory.
    const SIGNS: &[&str] = &[
        "database is locked",
        "unable to open database file",
        "canceling statement due to statement timeout",
        "terminating connection",
        "the database system is",
        "too many clients",
        "out of memory",
    ];
    is_storage_refusal(message) || SIGNS.iter().any(|sign| message.contains(sign))
}

/// How connections are made and how long anything may wait for the database (`[database]`).
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub max_connections: u32,
    /// PostgreSQL: how long connecting may take (libpq `connect_timeout`, at least 2 s).
    pub connect_timeout: Duration,
    /// PostgreSQL: the server cancels a statement that runs longer (`statement_timeout`). Also
    /// how long a request waits for a free connection or for its write to start before it is
    /// answered 503 with nothing done.
    pub statement_timeout: Duration,
    /// PostgreSQL: `false` turns off named prepared statements (a transaction-mode pooler).
    pub prepared_statements: bool,
    /// PostgreSQL: a direct URL for `LISTEN` and the migrations' advisory lock, when `url`
    /// goes through a transaction-mode pooler.
    pub listen_url: Option<String>,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
            prepared_statements: true,
            listen_url: None,
        }
    }
}

/// A libpq URL with `connect_timeout` and the session's `statement_timeout` added (unless the
/// URL sets them itself).
fn pg_url_with_timeouts(url: &str, options: &DbOptions) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let mut pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if !pairs.iter().any(|(k, _)| k == "connect_timeout") {
        pairs.push(("connect_timeout".into(), options.connect_timeout.as_secs().max(2).to_string()));
    }
    let statement = format!("-c statement_timeout={}", options.statement_timeout.as_millis());
    match pairs.iter_mut().find(|(k, _)| k == "options") {
        _ if options.statement_timeout.is_zero() => {}
        Some((_, given)) if given.contains("statement_timeout") => {}
        Some((_, given)) => {
            given.push(' ');
            given.push_str(&statement);
        }
        None => pairs.push(("options".into(), statement)),
    }
    // libpq percent-decodes a URI but reads `+` as itself: spaces go as `%20`. (The form
    // encoder writes a literal `+` as `%2B`, so every `+` left is a space.)
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
    parsed.set_query(Some(&query.replace('+', "%20")));
    parsed.to_string()
}

/// Opens connections for the pool; never guesses the backend from a failed attempt.
#[derive(Clone)]
pub struct ConnectionFactory {
    target: DbTarget,
    /// PostgreSQL: the URL libpq gets (`target.location` with the timeouts).
    pg_url: String,
    /// The same without the `options` startup parameter, which a pooler may refuse
    /// (PgBouncer: "unsupported startup parameter"); used once that happened.
    pg_url_plain: String,
    plain: Arc<std::sync::atomic::AtomicBool>,
    prepared_statements: bool,
    /// Set while connecting fails or connections are found dead; cleared by a success. While
    /// set, a request does not wait for a pooled connection: it is told 503 at once.
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl ConnectionFactory {
    fn new(target: DbTarget, options: &DbOptions) -> Self {
        let (pg_url, pg_url_plain) = match target.backend {
            Backend::Postgres => (
                pg_url_with_timeouts(&target.location, options),
                pg_url_with_timeouts(
                    &target.location,
                    &DbOptions { statement_timeout: Duration::ZERO, ..options.clone() },
                ),
            ),
            Backend::Sqlite => (String::new(), String::new()),
        };
        Self {
            target,
            pg_url,
            pg_url_plain,
            plain: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            prepared_statements: options.prepared_statements,
            down: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// `true` when the connection still answers a query.
    fn answers(&self, conn: &mut DbConnection) -> bool {
        let ok = conn.batch_execute("SELECT 1").is_ok();
        self.down.store(!ok, std::sync::atomic::Ordering::Relaxed);
        ok
    }

    fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
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
            Backend::Postgres => {
                use std::sync::atomic::Ordering;
                let mut connected = if self.plain.load(Ordering::Relaxed) {
                    PgConnection::establish(&self.pg_url_plain)
                } else {
                    PgConnection::establish(&self.pg_url)
                };
                if let Err(e) = &connected {
                    if e.to_string().contains("unsupported startup parameter") {
                        tracing::warn!(
                            "the database (a pooler?) refuses the `options` startup parameter: connecting without \
                             it, so `database.statement_timeout` is not set per session; set it on the role instead \
                             (ALTER ROLE … SET statement_timeout = '10s')"
                        );
                        self.plain.store(true, Ordering::Relaxed);
                        connected = PgConnection::establish(&self.pg_url_plain);
                    }
                }
                self.down.store(connected.is_err(), std::sync::atomic::Ordering::Relaxed);
                let mut conn = connected.map_err(diesel::r2d2::Error::ConnectionError)?;
                if !self.prepared_statements {
                    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
                }
                Ok(DbConnection::Pg(conn))
            }
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

/// A write job's state: waiting in the queue, taken by a writer, or given up by its caller
/// (who answered 503: it must then never run).
const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

/// A write for the SQLite writer: it runs in a savepoint of the writer's batch transaction.
trait BatchedWrite: Send {
    /// Does the work and holds its answer until the batch's fate is known; `None` when its
    /// caller gave up before it started (nothing is done).
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Option<Box<dyn HeldAnswer>>;
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
    /// [`QUEUED`], [`TAKEN`] or [`ABANDONED`].
    state: Arc<std::sync::atomic::AtomicU8>,
    health: Arc<StorageHealth>,
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
    fn run(self: Box<Self>, conn: &mut DbConnection) -> Option<Box<dyn HeldAnswer>> {
        use std::sync::atomic::Ordering;
        let WriteJob { work, reply, span, liveness, state, health } = *self;
        if state.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return None;
        }
        let result = span.in_scope(|| write_transaction(conn, work));
        // Taken whatever the outcome, so nothing carries over to the next job.
        let revoked = take_pending();
        let revoked = if result.is_ok() { revoked } else { Vec::new() };
        health.take_note();
        Some(Box::new(Held { reply, result, revoked, liveness }))
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
    health: Arc<StorageHealth>,
) -> std::sync::mpsc::Sender<Box<dyn BatchedWrite>> {
    let (jobs, inbox) = std::sync::mpsc::channel::<Box<dyn BatchedWrite>>();
    let inbox = Arc::new(std::sync::Mutex::new(inbox));
    for n in 0..threads {
        let (factory, inbox, health) = (factory.clone(), inbox.clone(), health.clone());
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
    /// When the database last refused a write for want of space or being read-only.
    health: Arc<StorageHealth>,
    options: Arc<DbOptions>,
}

/// How long `/readyz` waits for the database before it says "not ready".
pub const READY_WITHIN: Duration = Duration::from_millis(800);
/// How long a request waits for a pooled connection while connecting is known to fail.
const CHECKOUT_WHILE_DOWN: Duration = Duration::from_millis(100);

impl Db {
    /// [`Db::with_options`] with the default timeouts.
    pub fn new(url: &str, max_connections: u32) -> Result<Self, String> {
        Self::with_options(url, DbOptions { max_connections, ..DbOptions::default() })
    }

    /// Builds the pool without connecting, so a database that goes away later is retried.
    /// A new SQLite database is created `0600` in a `0700` directory: its WAL and SHM files
    /// take the database file's mode.
    pub fn with_options(url: &str, options: DbOptions) -> Result<Self, String> {
        let target = DbTarget::parse(url)?;
        if target.backend == Backend::Sqlite {
            create_private_sqlite_file(std::path::Path::new(&target.location))?;
        }
        let backend = target.backend;
        let factory = ConnectionFactory::new(target, &options);
        let health = Arc::new(StorageHealth::default());
        let writers = if backend == Backend::Sqlite { 1 } else { PG_WRITERS };
        let writer = spawn_writers(factory.clone(), writers, health.clone());
        let max_connections = options.max_connections.max(1);
        let pool = Pool::builder()
            .max_size(max_connections)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(3).min(options.statement_timeout))
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
            health,
            options: Arc::new(options),
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

    /// PostgreSQL: the URL for a connection that must reach the server itself, not a
    /// transaction-mode pooler (`LISTEN`, advisory locks): `database.listen_url` when set.
    pub fn direct_url(&self) -> String {
        let url = self.options.listen_url.as_deref().unwrap_or(&self.factory.target.location);
        pg_url_with_timeouts(url, &self.options)
    }

    /// Opens one connection outside the pool, for a clear error at start when the database
    /// cannot be reached at all.
    pub fn check_reachable(&self) -> Result<(), String> {
        self.factory.connect().map(drop).map_err(|e| match e {
            diesel::r2d2::Error::ConnectionError(c) => c.to_string().trim().to_string(),
            other => other.to_string(),
        })
    }

    /// Runs `f` with a pooled connection on the blocking pool, inside the caller's span. A
    /// request that cannot get a connection in time (the pool busy with a stalled database, or
    /// the database known to be down) is told `Unavailable` before anything ran.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let waiting =
            tokio::time::timeout(self.options.statement_timeout, self.permits.clone().acquire_owned());
        let permit = match waiting.await {
            Ok(permit) => permit.map_err(|_| E::from(DbError::Task))?,
            Err(_) => return Err(E::from(DbError::Unavailable)),
        };
        let pool = self.pool.clone();
        let factory = self.factory.clone();
        let healing = self.healing.clone();
        let health = self.health.clone();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permit = permit;
            let checkout = if factory.is_down() { pool.get_timeout(CHECKOUT_WHILE_DOWN) } else { pool.get() };
            let mut conn = checkout.map_err(|_| DbError::Unavailable)?;
            let result = f(&mut conn);
            health.take_note();
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
    fn submit<T, E, F>(
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
            liveness: self.liveness.clone(),
            state: state.clone(),
            health: self.health.clone(),
        };
        self.writer.send(Box::new(job)).map_err(|_| E::from(DbError::Task))?;
        Ok((state, answer))
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

    /// Whether the database answers and takes writes, decided within [`READY_WITHIN`]: a read,
    /// a small write through the writers (as every write goes), no refusal for want of space
    /// in the last seconds, and (SQLite) free space on its filesystem.
    pub async fn ready(&self) -> Readiness {
        let now = now();
        let storage = !self.health.refused_recently(now)
            && match self.factory.target.backend {
                Backend::Sqlite => free_bytes(std::path::Path::new(&self.factory.target.location))
                    .is_none_or(|free| free >= SQLITE_MIN_FREE_BYTES),
                Backend::Postgres => true,
            };
        let probe = async {
            let read = self.ping().await;
            let write = match self.submit(move |conn: &mut DbConnection| {
                conn.batch_execute(&format!(
                    "INSERT INTO server_state (name, value) VALUES ('readiness_probe', {now}) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value"
                ))
                .map_err(DbError::from)
            }) {
                Ok((_, answer)) => matches!(answer.await, Ok(Ok(()))),
                Err(_) => false,
            };
            (read, write)
        };
        let (answers, writes) = tokio::time::timeout(READY_WITHIN, probe).await.unwrap_or((false, false));
        Readiness { answers, writes: writes && storage }
    }

    /// Applies pending migrations; on PostgreSQL under an advisory lock (on the direct
    /// connection of `database.listen_url` when set), so replicas can start together.
    pub fn migrate(&self) -> Result<usize, String> {
        match self.factory.target.backend {
            Backend::Sqlite => {
                let mut conn = self.pool.get().map_err(|e| format!("cannot connect to the database: {e}"))?;
                run_migrations(&mut conn)
            }
            Backend::Postgres => {
                // A direct connection (not a transaction-mode pooler's): it holds the advisory
                // lock and runs the migrations, with no statement timeout.
                let direct = PgConnection::establish(&self.direct_url())
                    .map_err(|e| format!("cannot connect to the database to migrate it: {e}"))?;
                run_migrations(&mut DbConnection::Pg(direct))
            }
        }
    }
}

/// What `/readyz` reports of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// A read answered.
    pub answers: bool,
    /// A write committed, and nothing says the database is full or read-only.
    pub writes: bool,
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

/// Runs the pending migrations; on PostgreSQL under the advisory lock (another replica may be
/// migrating), with no statement timeout.
fn run_migrations(conn: &mut DbConnection) -> Result<usize, String> {
    let describe = |e: Box<dyn std::error::Error + Send + Sync>| format!("migration failed: {e}");
    match conn {
        DbConnection::Sqlite(c) => {
            c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()).map_err(describe)
        }
        DbConnection::Pg(c) => {
            let take = format!("SET statement_timeout = 0; SELECT pg_advisory_lock({MIGRATION_LOCK_ID})");
            c.batch_execute(&take).map_err(|e| format!("cannot take the migration lock: {e}"))?;
            let applied = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|v| v.len()).map_err(describe);
            let _ = c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"));
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
/// The database's clock in Unix seconds (PostgreSQL), read now, when the statement runs, not
/// when the request began; SQLite is on this machine, whose clock `fallback` already is.
/// Times that replicas compare (when a refresh token was spent) are taken from here, so a
/// replica whose clock is ahead cannot turn an honest retry into reuse.
pub fn db_now(conn: &mut DbConnection, fallback: i64) -> Result<i64, DbError> {
    #[derive(diesel::QueryableByName)]
    struct Clock {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        t: i64,
    }
    match conn {
        DbConnection::Pg(c) => {
            let clock: Clock = diesel::RunQueryDsl::get_result(diesel::sql_query(PG_CLOCK_QUERY), c)?;
            Ok(clock.t)
        }
        DbConnection::Sqlite(_) => Ok(fallback),
    }
}

/// The PostgreSQL expression of the current time in Unix seconds (the clock, not the
/// transaction's start).
pub const PG_CLOCK: &str = "floor(extract(epoch from clock_timestamp()))::bigint";
const PG_CLOCK_QUERY: &str = "SELECT floor(extract(epoch from clock_timestamp()))::bigint AS t";

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
