//! A database that goes away: 503 with Retry-After, nothing half-written, and recovery
//! without a restart. PostgreSQL only: the test takes the database away by refusing new
//! connections and ending the open ones.

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::support::test_db::pg_server_url;
use crate::support::*;

fn allow_connections(database: &str, allowed: bool) {
    let mut admin =
        PgConnection::establish(&format!("{}/postgres", pg_server_url())).expect("admin connection");
    admin
        .batch_execute(&format!("ALTER DATABASE {database} ALLOW_CONNECTIONS {allowed}"))
        .expect("ALTER DATABASE");
    if !allowed {
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"
            ))
            .expect("terminate backends");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_gives_503_and_recovers_by_itself() {
    let app = spawn_app(Backend::Postgres).await;
    let tokens = app.sign_in().await;
    let database = app.db.url.rsplit('/').next().expect("database name").to_string();
    let name = database.clone();
    tokio::task::spawn_blocking(move || allow_connections(&name, false)).await.unwrap();

    let me = app.get_bearer("/v1/me", &tokens.access_token).await;
    let refresh = app.refresh(&tokens.refresh_token).await;
    let ready = app.get("/readyz").await;

    me.assert_status(503);
    assert!(me.header("retry-after").is_some(), "503 without Retry-After: {me:?}");
    assert_eq!(me.header("content-type").as_deref(), Some("application/problem+json"));
    refresh.assert_oauth_error(503, "temporarily_unavailable");
    assert!(refresh.header("retry-after").is_some(), "503 without Retry-After: {refresh:?}");
    ready.assert_status(503);

    let name = database.clone();
    tokio::task::spawn_blocking(move || allow_connections(&name, true)).await.unwrap();

    // Connections are not tested on checkout: each dead one fails a request once (503, with
    // Retry-After) and is replaced, and the idle ones are tested in the background.
    eventually("the service answers again", || async {
        app.get_bearer("/v1/me", &tokens.access_token).await.status.as_u16() == 200
    })
    .await;
    // The refresh tried during the outage spent nothing: the token still rotates.
    let rotated = app.refresh(&tokens.refresh_token).await;
    rotated.assert_status(200);
    app.get("/readyz").await.assert_status(200);
}
