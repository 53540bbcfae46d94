//! How connections are made: `[database]` options, libpq timeouts, the pool's connection
//! factory (which notices a database that went away) and the healing of idle connections.

use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::r2d2::{ManageConnection, Pool, R2D2Connection};
use diesel::{Connection, PgConnection, SqliteConnection};

use super::{Backend, DbConnection, DbTarget};

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
pub(super) fn pg_url_with_timeouts(url: &str, options: &DbOptions) -> String {
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
    pub(super) target: DbTarget,
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
    pub(super) fn new(target: DbTarget, options: &DbOptions) -> Self {
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
    pub(super) fn answers(&self, conn: &mut DbConnection) -> bool {
        let ok = conn.batch_execute("SELECT 1").is_ok();
        self.down.store(!ok, std::sync::atomic::Ordering::Relaxed);
        ok
    }

    pub(super) fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Tests every idle connection once and replaces the dead ones (after the database came back).
/// One pass at a time.
pub(super) fn heal_idle_connections(
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
