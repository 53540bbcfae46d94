//! A throw-away database per test: a SQLite file in a temp dir, or a fresh Postgres database
//! dropped again (WITH (FORCE)) when the handle is dropped.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_query;
use diesel::sql_types::BigInt;

use super::Backend;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432";

/// Server URL (no database name) of the Postgres used by the tests.
pub fn pg_server_url() -> String {
    std::env::var("IDBRIDGE_TEST_PG_URL")
        .unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
        .trim_end_matches('/')
        .to_string()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub struct TestDb {
    /// `Sqlite` or `Postgres` (a PgBouncer test's database is a PostgreSQL one).
    pub backend: Backend,
    /// The URL the service is configured with.
    pub url: String,
    /// The URL the test's own SQL uses (straight to the database, never through a pooler).
    pub admin_url: String,
    /// More `[database]` configuration lines the service needs for this database.
    pub database_extra: String,
    pg_name: Option<String>,
    // keeps the SQLite file alive
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// Creates the database. Blocking (diesel is synchronous): call from `spawn_blocking`.
    pub fn create(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir for sqlite");
                // A folder idbridge creates itself, so its permissions are idbridge's.
                let path = dir.path().join("data").join("idbridge.db");
                let url = format!("sqlite://{}", path.display());
                let admin_url = url.clone();
                TestDb {
                    backend,
                    url,
                    admin_url,
                    database_extra: String::new(),
                    pg_name: None,
                    _dir: Some(dir),
                }
            }
            Backend::PgBouncer => {
                let mut db = TestDb::create(Backend::Postgres);
                let name = db.pg_name.clone().expect("a PostgreSQL database");
                db.url = super::pgbouncer::url_for(&name).expect("PgBouncer runs");
                db.database_extra =
                    format!("prepared_statements = false\nlisten_url = \"{}\"\n", db.admin_url);
                db
            }
            Backend::Postgres => {
                let server = pg_server_url();
                let name = format!("idbridge_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::establish(&format!("{server}/postgres")).unwrap_or_else(|e| {
                    panic!("cannot connect to Postgres at {server} (set IDBRIDGE_TEST_PG_URL): {e}")
                });
                conn.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
                let url = format!("{server}/{name}");
                TestDb {
                    backend,
                    admin_url: url.clone(),
                    url,
                    database_extra: String::new(),
                    pg_name: Some(name),
                    _dir: None,
                }
            }
        }
    }

    /// A handle on an existing database that is not dropped with the handle.
    pub fn attach(backend: Backend, url: &str) -> TestDb {
        TestDb {
            backend,
            url: url.to_string(),
            admin_url: url.to_string(),
            database_extra: String::new(),
            pg_name: None,
            _dir: None,
        }
    }

    /// `SELECT COUNT(*) AS n FROM <rest>`, e.g. `count_sql("devices WHERE revoked_at IS NULL")`.
    /// Blocking.
    pub fn count_blocking(&self, from: &str) -> i64 {
        let q = format!("SELECT COUNT(*) AS n FROM {from}");
        let rows: Vec<Count> = match self.backend {
            Backend::Sqlite => {
                let path = self.admin_url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open sqlite");
                conn.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy_timeout");
                sql_query(&q).load(&mut conn).unwrap_or_else(|e| panic!("{q}: {e}"))
            }
            Backend::Postgres | Backend::PgBouncer => {
                let mut conn = PgConnection::establish(&self.admin_url).expect("connect test db");
                sql_query(&q).load(&mut conn).unwrap_or_else(|e| panic!("{q}: {e}"))
            }
        };
        rows[0].n
    }

    /// Runs arbitrary SQL (test set-up only). Blocking.
    pub fn execute_blocking(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.admin_url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open sqlite");
                conn.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy_timeout");
                conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Backend::Postgres | Backend::PgBouncer => {
                let mut conn = PgConnection::establish(&self.admin_url).expect("connect test db");
                conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }
}

/// A transaction held open on a connection of its own (a lock, SQLite's write lock) until it
/// is released (rolled back, also when dropped) or committed.
pub struct HeldTransaction {
    release: Option<std::sync::mpsc::Sender<bool>>,
    done: Option<std::thread::JoinHandle<()>>,
}

impl HeldTransaction {
    /// Rolls the transaction back.
    pub fn release(mut self) {
        self.stop(false);
    }

    /// Commits the transaction. Blocking.
    pub fn commit(mut self) {
        self.stop(true);
    }

    fn stop(&mut self, commit: bool) {
        if let Some(release) = self.release.take() {
            let _ = release.send(commit);
        }
        if let Some(done) = self.done.take() {
            let _ = done.join();
        }
    }
}

impl Drop for HeldTransaction {
    fn drop(&mut self) {
        self.stop(false);
    }
}

impl TestDb {
    /// Begins a transaction (SQLite: `BEGIN IMMEDIATE`, which takes the write lock), runs
    /// `sql` in it, and holds it open. Blocking; returns once `sql` ran.
    pub fn hold_blocking(&self, sql: &str) -> HeldTransaction {
        let (backend, url, sql) = (self.backend, self.admin_url.clone(), sql.to_string());
        let (ready, is_ready) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<bool>();
        let done = std::thread::spawn(move || {
            let run = |conn: &mut dyn SimpleConnection, begin: &str| {
                conn.batch_execute(begin).expect("BEGIN");
                if !sql.is_empty() {
                    conn.batch_execute(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                }
                ready.send(()).expect("signal");
                let end = if released.recv() == Ok(true) { "COMMIT" } else { "ROLLBACK" };
                conn.batch_execute(end).unwrap_or_else(|e| panic!("{end}: {e}"));
            };
            match backend {
                Backend::Sqlite => {
                    let mut conn =
                        SqliteConnection::establish(url.trim_start_matches("sqlite://")).expect("open");
                    run(&mut conn, "PRAGMA busy_timeout = 10000; BEGIN IMMEDIATE");
                }
                Backend::Postgres | Backend::PgBouncer => {
                    let mut conn = PgConnection::establish(&url).expect("connect");
                    run(&mut conn, "BEGIN");
                }
            }
        });
        is_ready.recv().expect("the transaction began");
        HeldTransaction { release: Some(release), done: Some(done) }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let server = pg_server_url();
            if let Ok(mut conn) = PgConnection::establish(&format!("{server}/postgres")) {
                let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            }
        }
    }
}
