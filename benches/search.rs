//! The console's user search at scale: fills a database with users (each with a data key, an
//! encrypted name and e-mail, and their real search terms, `accounts::search`), outside the
//! timing, then times `admin::directory::search_users` (after the indexer's check for stale
//! users, as the page does) for common and rare names, two-word names, e-mail prefixes and a
//! miss; prints the median and 95th percentile of each.
//!
//! `cargo bench --bench search` (env: SEARCH_DB=postgres|sqlite, default postgres;
//! SEARCH_USERS, default 1000000; SEARCH_RUNS per query, default 30; IDBRIDGE_TEST_PG_URL,
//! default postgres://postgres@127.0.0.1:5432; SEARCH_KEEP=NAME keeps the PostgreSQL database
//! under that name, filled once, for the next run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use idbridge::accounts::profile::seal_profile;
use idbridge::crypto::blind_index::BlindIndex;
use idbridge::crypto::keyring::MasterKeyring;
use idbridge::crypto::server_secrets::ServerSecret;
use idbridge::crypto::user_keys::UserKeys;
use idbridge::db::schema::{user_keys, user_search_terms, users};
use idbridge::db::{Db, DbConnection};

const FIRST: [&str; 50] = [
    "maria", "james", "mary", "john", "ana", "david", "sarah", "michael", "laura", "daniel", "anna", "jose",
    "emma", "luis", "sofia", "carlos", "olivia", "juan", "mia", "ahmed", "fatima", "mohamed", "aisha", "wei",
    "li", "yuki", "hiro", "priya", "raj", "amit", "elena", "ivan", "olga", "sergei", "chloe", "lucas",
    "noah", "lea", "marco", "giulia", "pierre", "marie", "hans", "greta", "sven", "ingrid", "kofi", "ama",
    "thabo", "zanele",
];
const LAST: [&str; 40] = [
    "garcia", "smith", "johnson", "martinez", "brown", "lopez", "wang", "li", "zhang", "kumar", "singh",
    "nguyen", "kim", "park", "mueller", "schmidt", "rossi", "russo", "dubois", "martin", "silva", "santos",
    "ivanov", "petrov", "tanaka", "suzuki", "sato", "khan", "ali", "hassan", "okafor", "mensah", "dlamini",
    "nkosi", "jensen", "hansen", "larsen", "cohen", "levi", "murphy",
];

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Inserts `n` users with a key, a sealed name and e-mail, and their search terms.
fn fill(conn: &mut DbConnection, keys: &UserKeys, index: &BlindIndex, n: usize) -> usize {
    let chunk = 2000;
    let started = Instant::now();
    let mut terms_total = 0;
    for start in (0..n).step_by(chunk) {
        let mut user_rows = Vec::new();
        let mut key_rows = Vec::new();
        let mut term_rows = Vec::new();
        for i in start..(start + chunk).min(n) {
            let id = uuid::Uuid::now_v7().to_string();
            let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
            let name = format!("{first} {last}");
            let email = format!("{first}.{last}{i}@example.com");
            let (dek, wrapped, by) = keys.new_key(&id, 1);
            let cipher = <chacha20poly1305::XChaCha20Poly1305 as chacha20poly1305::KeyInit>::new(
                dek.as_slice().into(),
            );
            let sealed = seal_profile(&cipher, &id, Some(&name), Some(&email));
            for term in index.terms_of(Some(&name), &[email]) {
                term_rows.push((user_search_terms::term.eq(term), user_search_terms::user_id.eq(id.clone())));
            }
            user_rows.push((
                users::id.eq(id.clone()),
                users::created_at.eq(i as i64),
                users::is_admin.eq(false),
                users::display_name_ct.eq(sealed.display_name),
                users::email_ct.eq(sealed.email),
                users::search_indexed.eq(true),
            ));
            key_rows.push((
                user_keys::user_id.eq(id),
                user_keys::version.eq(1),
                user_keys::wrapped.eq(wrapped),
                user_keys::wrapped_by.eq(by),
                user_keys::created_at.eq(0i64),
            ));
        }
        terms_total += term_rows.len();
        macro_rules! insert_all {
            ($c:expr) => {
                $c.transaction(|c| {
                    diesel::insert_into(users::table).values(&user_rows).execute(c)?;
                    diesel::insert_into(user_keys::table).values(&key_rows).execute(c)?;
                    for part in term_rows.chunks(10_000) {
                        diesel::insert_into(user_search_terms::table).values(part).execute(c)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .expect("insert")
            };
        }
        match conn {
            DbConnection::Pg(c) => insert_all!(c),
            DbConnection::Sqlite(c) => insert_all!(c),
        }
        if (start / chunk) % 50 == 0 {
            eprintln!("  filled {} users ({:.0?})", start + chunk.min(n - start), started.elapsed());
        }
    }
    eprintln!("  filled {n} users, {terms_total} terms, in {:.1?}", started.elapsed());
    terms_total
}

fn main() {
    let backend = env_or("SEARCH_DB", "postgres");
    let n: usize = env_or("SEARCH_USERS", "1000000").parse().expect("SEARCH_USERS");
    let runs: usize = env_or("SEARCH_RUNS", "30").parse().expect("SEARCH_RUNS");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pg_drop = None;
    let url = match backend.as_str() {
        "sqlite" => format!("sqlite://{}/search.db", dir.path().display()),
        "postgres" => {
            let server = env_or("IDBRIDGE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432");
            let keep = std::env::var("SEARCH_KEEP").ok();
            let name =
                keep.clone().unwrap_or_else(|| format!("idbridge_search_{}", uuid::Uuid::new_v4().simple()));
            let mut admin = PgConnection::establish(&format!("{server}/postgres")).expect("postgres");
            let created = admin.batch_execute(&format!("CREATE DATABASE {name}"));
            if keep.is_none() {
                created.expect("create database");
                pg_drop = Some((server.clone(), name.clone()));
            }
            format!("{server}/{name}")
        }
        other => panic!("SEARCH_DB must be postgres or sqlite, not {other}"),
    };
    println!("search benchmark: backend={backend}, {n} users");
    let db = Db::new(&url, 2).expect("database url");
    db.migrate().expect("migrations");
    let keys = UserKeys::new(Arc::new(MasterKeyring::from_keys(vec![[7; 32]])));
    let index = BlindIndex(ServerSecret::from_bytes([9; 32]));
    let mut conn = db.get().expect("connection");
    let have: i64 = users::table.count().get_result(&mut *conn).expect("count users");
    let terms = if have >= n as i64 {
        println!("reusing {have} users");
        user_search_terms::table.count().get_result::<i64>(&mut *conn).expect("count terms") as usize
    } else {
        fill(&mut conn, &keys, &index, n)
    };
    if let DbConnection::Pg(c) = &mut *conn {
        c.batch_execute("ANALYZE").expect("analyze");
    }
    println!("{terms} search terms ({:.1} a user)", terms as f64 / n as f64);
    for q in
        ["maria", "ma", "maria garcia", "garcia maria", "maria.garcia12@exa", "zanele.murphy", "zzzz", "xq"]
    {
        let mut times = Vec::with_capacity(runs);
        let mut found = 0;
        for _ in 0..runs {
            let started = Instant::now();
            idbridge::accounts::search::index_pending(&mut conn, &keys, &index, 500).expect("index");
            let result =
                idbridge::admin::directory::search_users(&mut conn, &keys, &index, q).expect("search");
            times.push(started.elapsed());
            found = result.users.len();
        }
        times.sort();
        let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
        println!("q={q:<20} shown {found:>2}  median {:>8.2?}  p95 {:>8.2?}", at(0.5), at(0.95));
        let _: Duration = at(0.5);
    }
    drop(conn);
    drop(db);
    if let Some((server, name)) = pg_drop {
        if let Ok(mut admin) = PgConnection::establish(&format!("{server}/postgres")) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}
