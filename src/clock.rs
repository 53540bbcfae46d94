//! The clock every rule reads: Unix seconds on this machine. Times that replicas compare are
//! read from the database's clock instead (`db::db_now`).

/// Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
