//! Storage: one r2d2 pool of [`DbConnection`]s over PostgreSQL or SQLite, the embedded
//! migrations, and the helpers that run blocking diesel work off the async runtime.
//!
//! Backend differences live here and nowhere else: connection set-up (SQLite pragmas),
//! write-transaction start (`BEGIN IMMEDIATE` on SQLite), and the migration lock (PostgreSQL).

pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
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
            DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | DieselError::BrokenTransactionManager => DbError::Unavailable,
            other => DbError::Query(other),
        }
    }
}

impl DbError {
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Query(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)))
    }
}

/// Opens connections for the pool; never guesses the backend from a failed attempt.
#[derive(Clone)]
pub struct ConnectionFactory {
    target: DbTarget,
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
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
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

/// A write job for the SQLite writer thread: it gets the connection, or why there is none.
type WriteJob = Box<dyn FnOnce(Result<&mut DbConnection, DbError>) + Send>;

/// SQLite allows one writer at a time. Rather than have pooled connections queue on the file
/// lock (and each find its page cache stale after the others' commits), every write
/// transaction runs on one thread that owns one connection.
fn spawn_sqlite_writer(factory: ConnectionFactory) -> std::sync::mpsc::Sender<WriteJob> {
    let (jobs, inbox) = std::sync::mpsc::channel::<WriteJob>();
    std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            let mut conn: Option<DbConnection> = None;
            for job in inbox {
                if conn.is_none() {
                    conn = factory.connect().ok();
                }
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match conn.as_mut() {
                        Some(c) => job(Ok(c)),
                        None => job(Err(DbError::Unavailable)),
                    }));
                let broken = conn.as_mut().is_some_and(|c| factory.has_broken(c));
                if outcome.is_err() || broken {
                    conn = None;
                }
            }
        })
        .expect("spawning the SQLite writer thread");
    jobs
}

/// The pool plus what a caller needs to run work on it.
#[derive(Clone)]
pub struct Db {
    pool: Pool<ConnectionFactory>,
    backend: Backend,
    /// Bounds blocking threads to the pool size, so a burst queues here instead of parking
    /// hundreds of threads on the pool.
    permits: Arc<tokio::sync::Semaphore>,
    sqlite_writer: Option<std::sync::mpsc::Sender<WriteJob>>,
}

impl Db {
    /// Builds the pool without connecting, so a database that is down at start is retried.
    pub fn new(url: &str, max_connections: u32) -> Result<Self, String> {
        let target = DbTarget::parse(url)?;
        if target.backend == Backend::Sqlite {
            if let Some(dir) = std::path::Path::new(&target.location).parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                }
            }
        }
        let backend = target.backend;
        let factory = ConnectionFactory { target };
        let sqlite_writer = (backend == Backend::Sqlite).then(|| spawn_sqlite_writer(factory.clone()));
        let max_connections = max_connections.max(1);
        let pool = Pool::builder()
            .max_size(max_connections)
            .min_idle(Some(0))
            .connection_timeout(Duration::from_secs(3))
            .test_on_check_out(backend == Backend::Postgres)
            .build_unchecked(factory);
        let permits = Arc::new(tokio::sync::Semaphore::new(max_connections as usize));
        Ok(Self { pool, backend, permits, sqlite_writer })
    }

    pub fn backend(&self) -> Backend {
        self.backend
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
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let _permit = permit;
            let mut conn = pool.get().map_err(|_| DbError::Unavailable)?;
            f(&mut conn)
        });
        task.in_current_span().await.map_err(|_| E::from(DbError::Task))?
    }

    /// Runs `f` in a write transaction: committed when `f` returns `Ok`, rolled back otherwise.
    /// The answer built from `Ok` is therefore only ever sent after the commit.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let Some(writer) = &self.sqlite_writer else {
            return self.run(move |conn| write_transaction(conn, f)).await;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        let job: WriteJob = Box::new(move |conn| {
            let _entered = span.enter();
            let result = match conn {
                Ok(conn) => write_transaction(conn, f),
                Err(e) => Err(E::from(e)),
            };
            let _ = reply.send(result);
        });
        writer.send(job).map_err(|_| E::from(DbError::Task))?;
        answer.await.map_err(|_| E::from(DbError::Task))?
    }

    /// A pooled connection for synchronous callers (the CLI and unit tests).
    pub fn get(&self) -> Result<diesel::r2d2::PooledConnection<ConnectionFactory>, DbError> {
        self.pool.get().map_err(|_| DbError::Unavailable)
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

fn write_transaction<T, E, F>(conn: &mut DbConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E>,
    E: From<DbError>,
{
    let begin = match conn {
        DbConnection::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
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

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
