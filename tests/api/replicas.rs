//! Several replicas on one PostgreSQL database: three `idbridge serve` processes started at the
//! same moment (migrations under the advisory lock). A sign-in on one refreshes on another;
//! a revocation on a third is refused everywhere; a signing key added on one is published by
//! all; concurrent refreshes of one token spread across replicas never fork the chain.

use futures_util::future::join_all;

use crate::support::*;

use std::process::Command;

use crate::support::server_process::{start_replica, Replica};

async fn post_form(http: &reqwest::Client, url: String, form: &[(&str, &str)]) -> Answer {
    Answer::read(http.post(url).form(form).send().await.expect("POST")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_sign_ins_revocations_keys_and_one_refresh_chain() {
    // Fakes and a configuration from a test app; the replicas get a database of their own.
    let base = spawn_app(Backend::Postgres).await;
    let db = tokio::task::spawn_blocking(|| TestDb::create(Backend::Postgres)).await.unwrap();
    let master_key = base.dir().join("master.key").display().to_string();
    let fakes = Some((base.facebook.as_ref(), base.limited_login.as_ref()));
    let config_path = base.dir().join("replicas.toml");
    std::fs::write(&config_path, base.config.render_with(&db.url, &master_key, base.google.issuer(), fakes))
        .unwrap();

    let ports = [free_port(), free_port(), free_port()];
    let starts = ports.map(|port| {
        let path = config_path.clone();
        std::thread::spawn(move || start_replica(&path, port))
    });
    let replicas: Vec<Replica> = starts.into_iter().map(|s| s.join().expect("a replica started")).collect();
    let http = base.client.clone();

    // Sign in on the first, refresh on the second.
    let id_token = base.google.id_token_for("replicated-sub");
    let exchange = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", id_token.as_str()),
        ("subject_token_type", ID_TOKEN_TYPE),
        ("client_id", "app"),
    ];
    let signed =
        Tokens::from_answer(&post_form(&http, replicas[0].url("/oauth/token"), &exchange).await, "s");
    let refresh = |replica: &Replica, token: &str| {
        let (url, token) = (replica.url("/oauth/token"), token.to_string());
        let http = http.clone();
        async move {
            post_form(
                &http,
                url,
                &[("grant_type", "refresh_token"), ("refresh_token", &token), ("client_id", "app")],
            )
            .await
        }
    };
    let refreshed = refresh(&replicas[1], &signed.refresh_token).await;
    let refreshed = Tokens::from_answer(&refreshed, "");
    for replica in &replicas {
        let me = http.get(replica.url("/v1/me")).bearer_auth(&refreshed.access_token).send().await.unwrap();
        assert_eq!(me.status().as_u16(), 200, "{}", replica.address);
    }

    // Concurrent refreshes of one token, one per replica: at most one chain continues.
    let answers = join_all(replicas.iter().map(|r| refresh(r, &refreshed.refresh_token))).await;
    let winners: std::collections::HashSet<String> = answers
        .iter()
        .filter(|a| a.status.as_u16() == 200)
        .map(|a| a.str("refresh_token").to_string())
        .collect();
    assert!(winners.len() <= 1, "the chain forked: {winners:?}");
    for a in answers.iter().filter(|a| a.status.as_u16() != 200) {
        a.assert_oauth_error(400, "invalid_grant");
    }

    // Revoke on the third: every replica refuses the device's access token.
    let revoked = post_form(
        &http,
        replicas[2].url("/oauth/revoke"),
        &[("token", &refreshed.access_token), ("client_id", "app")],
    )
    .await;
    revoked.assert_status(200);
    let local =
        http.get(replicas[2].url("/v1/me")).bearer_auth(&refreshed.access_token).send().await.unwrap();
    assert_eq!(local.status().as_u16(), 401, "refused at once on the revoking replica");
    for replica in &replicas[..2] {
        eventually(&format!("{} refuses the revoked device", replica.address), || async {
            let me =
                http.get(replica.url("/v1/me")).bearer_auth(&refreshed.access_token).send().await.unwrap();
            me.status().as_u16() == 401
        })
        .await;
    }

    // A signing key added through one process is published by every replica.
    let out = tokio::task::spawn_blocking({
        let path = config_path.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_idbridge"))
                .args(["keys", "rotate-signing", "--config"])
                .arg(path)
                .output()
                .expect("keys rotate-signing")
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for replica in &replicas {
        eventually(&format!("{} publishes the new key", replica.address), || async {
            let jwks: serde_json::Value =
                http.get(replica.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
            jwks["keys"].as_array().map(Vec::len) == Some(2)
        })
        .await;
    }
    drop(replicas);
    drop(db);
}
