//! Group commit (`Db::write`), on both backends: concurrent write jobs share transactions,
//! each in its own savepoint. A failing job undoes only itself; every answer comes after the
//! commit, so what a job reports as written is in the database.

use futures_util::future::join_all;

use crate::support::*;

async fn a_failing_write_never_harms_its_neighbours(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = idbridge::db::Db::new(&app.db.url, 4).expect("open the database");
    use diesel::prelude::*;
    use idbridge::db::schema::nonces;

    // 64 jobs at once: every fourth inserts a key another job also inserts (a unique violation).
    let jobs = (0..64).map(|i| {
        let db = db.clone();
        async move {
            let key = if i % 4 == 0 { "shared".to_string() } else { format!("nonce-{i}") };
            db.write(move |conn| {
                diesel::insert_into(nonces::table)
                    .values((
                        nonces::nonce.eq(&key),
                        nonces::client_id.eq("app"),
                        nonces::expires_at.eq(i64::MAX),
                    ))
                    .execute(conn)
                    .map_err(idbridge::db::DbError::from)
            })
            .await
        }
    });
    let answers = join_all(jobs).await;

    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(ok, 48 + 1, "the 48 distinct keys and one of the 16 shared ones");
    // What answered Ok is committed; what failed left nothing behind.
    assert_eq!(app.count("nonces").await, 49);
    assert_eq!(app.count("nonces WHERE nonce = 'shared'").await, 1);
}
both_backends!(a_failing_write_never_harms_its_neighbours);
