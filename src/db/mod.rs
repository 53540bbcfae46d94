//! Storage: one r2d2 pool of [`DbConnection`]s over PostgreSQL or SQLite, the embedded
//! migrations, and the helpers that run blocking diesel work off the async runtime.
//!
//! SQLite runs with `secure_delete`, so a deleted row (a deleted user's wrapped data keys) is
//! overwritten in the database file rather than left in a free page.
//!
//! Backend differences live here and nowhere else: connection set-up (SQLite pragmas), how
//! writes run (group commit on both: one writer thread on SQLite with `BEGIN IMMEDIATE`, a few
//! on PostgreSQL; a savepoint per write), and the migration lock (PostgreSQL).

mod connect;
mod health;
pub mod notify;
pub mod schema;
mod writer;

use connect::{heal_idle_connections, pg_url_with_timeouts};
pub use connect::{ConnectionFactory, DbOptions};
use health::{is_storage_refusal, is_unavailable, STORAGE_REFUSED};
pub use health::{Readiness, StorageHealth};
use writer::{spawn_writers, BatchedWrite, PG_WRITERS};

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::r2d2::{ManageConnection, Pool};
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::{Connection, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use tracing::Instrument;

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
    /// This replica's subscribers to committed change notices (`notify`).
    subscribers: notify::Subscribers,
    /// A pass over the idle connections is running (see `heal_idle_connections`).
    healing: Arc<std::sync::atomic::AtomicBool>,
    /// When the database last refused a write for want of space or being read-only.
    health: Arc<StorageHealth>,
    options: Arc<DbOptions>,
    /// Time the writer threads spent on batches, summed (nanoseconds), and how many there are.
    writer_busy: Arc<std::sync::atomic::AtomicU64>,
    writers: usize,
}

/// A reading of the writers' busy time, to tell how loaded they were since an earlier one.
#[derive(Debug, Clone, Copy)]
pub struct WriterLoad {
    at: std::time::Instant,
    busy_nanos: u64,
    threads: usize,
}

impl WriterLoad {
    /// The share of the writers' time spent on batches between `earlier` and this reading,
    /// from 0 (idle) to 1 (every writer busy throughout).
    pub fn busy_since(&self, earlier: &WriterLoad) -> f64 {
        let span =
            self.at.saturating_duration_since(earlier.at).as_nanos() as f64 * self.threads.max(1) as f64;
        if span <= 0.0 {
            return 0.0;
        }
        (self.busy_nanos.saturating_sub(earlier.busy_nanos) as f64 / span).min(1.0)
    }
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
        let writer_busy = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = spawn_writers(factory.clone(), writers, health.clone(), writer_busy.clone());
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
            subscribers: notify::Subscribers::default(),
            healing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            health,
            options: Arc::new(options),
            writer_busy,
            writers,
        })
    }

    /// How much the writers have worked so far; two readings give their load in between
    /// ([`WriterLoad::busy_since`]), for background work to yield to requests.
    pub fn writer_load(&self) -> WriterLoad {
        WriterLoad {
            at: std::time::Instant::now(),
            busy_nanos: self.writer_busy.load(std::sync::atomic::Ordering::Relaxed),
            threads: self.writers,
        }
    }

    /// Who hears of committed changes on this replica (see `notify`).
    pub fn subscribers(&self) -> &notify::Subscribers {
        &self.subscribers
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
        let subscribers = self.subscribers.clone();
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permit = permit;
            let checkout = if factory.is_down() { pool.get_timeout(CHECKOUT_WHILE_DOWN) } else { pool.get() };
            let mut conn = checkout.map_err(|_| DbError::Unavailable)?;
            notify::take_pending();
            let result = f(&mut conn);
            // Work run here commits as it goes (or in transactions of its own): what it
            // published holds once it returned `Ok`.
            let published = notify::take_pending();
            if result.is_ok() {
                subscribers.deliver(&published);
            }
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

    /// A pooled connection for synchronous callers (the CLI and unit tests).
    pub fn get(&self) -> Result<diesel::r2d2::PooledConnection<ConnectionFactory>, DbError> {
        self.pool.get().map_err(|_| DbError::Unavailable)
    }

    /// Connections the pool holds, and how many of them are idle.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.pool.state();
        (state.connections, state.idle_connections)
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

/// A new row id: a UUIDv7, time-ordered so inserts land at the right edge of each index
/// instead of on a random page.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
