//! `keys rotate-master` over many users: fills a database with users and their wrapped data
//! keys (straight SQL in batches, outside the timing), then runs the real binary's
//! `keys rotate-master` with a new first master key and reports keys per second.
//!
//! `cargo bench --bench rotate_master` (env: ROTATE_DB=sqlite|postgres, default sqlite;
//! ROTATE_USERS, default 1000000; ROTATE_BATCH, the --batch-size, default 1000;
//! IDBRIDGE_TEST_PG_URL, default postgres://postgres@127.0.0.1:5432).

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use idbridge::crypto::keyring::MasterKeyring;
use idbridge::crypto::user_keys::UserKeys;
use idbridge::db::schema::{user_keys, users};
use idbridge::db::{Db, DbConnection};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn write_key(dir: &std::path::Path, name: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, MasterKeyring::generate()).expect("write key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// Inserts `n` users with key version 1 each, in transactions of `chunk` users.
fn fill(conn: &mut DbConnection, keys: &UserKeys, n: usize) {
    let chunk = 5000;
    let started = Instant::now();
    for start in (0..n).step_by(chunk) {
        let ids: Vec<String> =
            (start..(start + chunk).min(n)).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let user_rows: Vec<_> = ids
            .iter()
            .map(|id| (users::id.eq(id), users::created_at.eq(0i64), users::is_admin.eq(false)))
            .collect();
        let key_rows: Vec<_> = ids
            .iter()
            .map(|id| {
                let (_, wrapped, by) = keys.new_key(id, 1);
                (
                    user_keys::user_id.eq(id.clone()),
                    user_keys::version.eq(1),
                    user_keys::wrapped.eq(wrapped),
                    user_keys::wrapped_by.eq(by),
                    user_keys::created_at.eq(0i64),
                )
            })
            .collect();
        match conn {
            DbConnection::Pg(c) => c
                .transaction(|c| {
                    diesel::insert_into(users::table).values(&user_rows).execute(c)?;
                    diesel::insert_into(user_keys::table).values(&key_rows).execute(c)
                })
                .expect("insert"),
            DbConnection::Sqlite(c) => c
                .transaction(|c| {
                    diesel::insert_into(users::table).values(&user_rows).execute(c)?;
                    diesel::insert_into(user_keys::table).values(&key_rows).execute(c)
                })
                .expect("insert"),
        };
        if (start / chunk) % 40 == 0 {
            eprintln!("  filled {} users ({:.0?})", start + ids.len(), started.elapsed());
        }
    }
    eprintln!("  filled {n} users in {:.1?}", started.elapsed());
}

fn main() {
    let backend = env_or("ROTATE_DB", "sqlite");
    let n: usize = env_or("ROTATE_USERS", "1000000").parse().expect("ROTATE_USERS");
    let batch = env_or("ROTATE_BATCH", "1000");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pg_drop = None;
    let url = match backend.as_str() {
        "sqlite" => format!("sqlite://{}/rotate.db", dir.path().display()),
        "postgres" => {
            let server = env_or("IDBRIDGE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432");
            let name = format!("idbridge_rotate_{}", uuid::Uuid::new_v4().simple());
            let mut admin = PgConnection::establish(&format!("{server}/postgres")).expect("postgres");
            admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
            pg_drop = Some((server.clone(), name.clone()));
            format!("{server}/{name}")
        }
        other => panic!("ROTATE_DB must be sqlite or postgres, not {other}"),
    };
    let old = write_key(dir.path(), "old.key");
    let new = write_key(dir.path(), "new.key");
    println!("rotate-master benchmark: backend={backend}, {n} users, batch {batch}");

    let db = Db::new(&url, 2).expect("database url");
    db.migrate().expect("migrations");
    let keyring = MasterKeyring::load(&[format!("file:{old}")]).expect("keyring");
    let keys = UserKeys::new(Arc::new(keyring));
    fill(&mut db.get().expect("connection"), &keys, n);
    drop(db);

    let config = dir.path().join("idbridge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"http://127.0.0.1:8080\"\n[database]\nurl = \"{url}\"\n[keys]\nmaster_keys = [\"file:{new}\", \"file:{old}\"]\n"
        ),
    )
    .expect("config");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_idbridge"))
        .args(["keys", "rotate-master", "--batch-size", &batch, "--config"])
        .arg(&config)
        .output()
        .expect("run idbridge");
    let secs = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "rotate-master failed: {}", String::from_utf8_lossy(&out.stderr));
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!(
        "rotate-master over {n} user keys: {secs:.1} s of wall time, {:.0} keys/s (whole command)",
        n as f64 / secs
    );
    if let Some((server, name)) = pg_drop {
        if let Ok(mut admin) = PgConnection::establish(&format!("{server}/postgres")) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}
