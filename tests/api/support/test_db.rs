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
    pub backend: Backend,
    /// The URL the service is configured with.
    pub url: String,
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
                TestDb { backend, url, pg_name: None, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let server = pg_server_url();
                let name = format!("idbridge_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::establish(&format!("{server}/postgres")).unwrap_or_else(|e| {
                    panic!("cannot connect to Postgres at {server} (set IDBRIDGE_TEST_PG_URL): {e}")
                });
                conn.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
                TestDb { backend, url: format!("{server}/{name}"), pg_name: Some(name), _dir: None }
            }
        }
    }

    /// A handle on an existing database that is not dropped with the handle.
    pub fn attach(backend: Backend, url: &str) -> TestDb {
        TestDb { backend, url: url.to_string(), pg_name: None, _dir: None }
    }

    /// `SELECT COUNT(*) AS n FROM <rest>`, e.g. `count_sql("devices WHERE revoked_at IS NULL")`.
    /// Blocking.
    pub fn count_blocking(&self, from: &str) -> i64 {
        let q = format!("SELECT COUNT(*) AS n FROM {from}");
        let rows: Vec<Count> = match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open sqlite");
                conn.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy_timeout");
                sql_query(&q).load(&mut conn).unwrap_or_else(|e| panic!("{q}: {e}"))
            }
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&self.url).expect("connect test db");
                sql_query(&q).load(&mut conn).unwrap_or_else(|e| panic!("{q}: {e}"))
            }
        };
        rows[0].n
    }

    /// Runs arbitrary SQL (test set-up only). Blocking.
    pub fn execute_blocking(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let path = self.url.trim_start_matches("sqlite://");
                let mut conn = SqliteConnection::establish(path).expect("open sqlite");
                conn.batch_execute("PRAGMA busy_timeout = 10000;").expect("busy_timeout");
                conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Backend::Postgres => {
                let mut conn = PgConnection::establish(&self.url).expect("connect test db");
                conn.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
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
