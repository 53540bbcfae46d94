//! Is the database fit for work? How its refusals are classified (503, not 500), when it last
//! refused a write for want of space, and the readiness probe behind `/readyz`.

use diesel::connection::SimpleConnection;

use super::{Backend, Db, DbConnection, DbError, READY_WITHIN};
use crate::clock::now;

/// The signs of a database that cannot store anything now: full, or read-only (SQLite's
/// SQLITE_FULL, SQLITE_IOERR, SQLITE_READONLY; PostgreSQL's 53100 disk_full and 25006
/// read_only_sql_transaction).
pub(super) fn is_storage_refusal(message: &str) -> bool {
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
    pub(super) static STORAGE_REFUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
    pub(super) fn take_note(&self) {
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
pub(super) fn free_bytes(path: &std::path::Path) -> Option<u64> {
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
pub(super) fn is_unavailable(message: &str) -> bool {
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

impl Db {
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
}

/// What `/readyz` reports of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// A read answered.
    pub answers: bool,
    /// A write committed, and nothing says the database is full or read-only.
    pub writes: bool,
}
