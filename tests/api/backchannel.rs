//! OpenID Connect Back-Channel Logout to apps: when a device of a client with a
//! `backchannel_logout_uri` ends, for any reason, the client gets a logout token, verified here
//! against the JWKS with every claim; a receiver that fails is retried without slowing the
//! revocation; a notice survives a restart; with two replicas each notice is sent once.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::support::logout_receiver::LogoutReceiver;
use crate::support::server_process::start_replica;
use crate::support::*;

async fn app_told_by(backend: Backend, receiver: &LogoutReceiver) -> TestApp {
    let uri = receiver.uri.clone();
    spawn_app_with(backend, |c| c.app_logout_uri = Some(uri)).await
}

/// Verifies a logout token as a relying party must (Back-Channel Logout 1.0 §2.6): signature
/// against the JWKS, `typ`, `iss`, `aud`, `iat`, `exp`, the event, no `nonce`. Its claims.
async fn verified_logout_token(app: &TestApp, token: &str) -> Value {
    let header = decode_header(token).expect("a JWS");
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let set: JwkSet = serde_json::from_str(&app.get("/.well-known/jwks.json").await.text).unwrap();
    let jwk = set.find(header.kid.as_deref().expect("kid")).expect("its key is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&["app"]);
    validation.set_issuer(&[PUBLIC_URL]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "exp", "jti", "sub", "sid"]);
    let claims = decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("the logout token verifies")
        .claims;
    assert!(claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object(), "{claims}");
    assert!(claims.get("nonce").is_none(), "never a nonce: {claims}");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 120);
    claims
}

async fn a_revoked_device_is_told_to_its_client_with_a_verifiable_logout_token(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    let app = app_told_by(backend, &receiver).await;
    let signed = app.sign_in().await;

    app.revoke(&signed.refresh_token, Auth::Public("app")).await.assert_status(200);

    let tokens = receiver.wait_for_accepted(1).await;
    let claims = verified_logout_token(&app, &tokens[0]).await;
    assert_eq!(claims["sub"], signed.user_id.as_str());
    assert_eq!(claims["sid"], signed.device_id.as_str());
    eventually("the notice is done", || async { app.count("logout_notices").await == 0 }).await;
    assert_eq!(receiver.received().len(), 1, "sent once");
}
both_backends!(a_revoked_device_is_told_to_its_client_with_a_verifiable_logout_token);

async fn deleting_a_user_tells_the_client_of_each_device(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    let app = app_told_by(backend, &receiver).await;
    let sub = crate::support::fake_google::random_sub();
    let first = app.sign_in_as(&sub).await;
    let second = app.sign_in_as(&sub).await;

    app.delete_bearer("/v1/me", &second.access_token).await.assert_status(204);

    let tokens = receiver.wait_for_accepted(2).await;
    let mut sids = Vec::new();
    for token in &tokens {
        let claims = verified_logout_token(&app, token).await;
        assert_eq!(claims["sub"], first.user_id.as_str());
        sids.push(claims["sid"].as_str().unwrap().to_string());
    }
    sids.sort();
    let mut expected = vec![first.device_id.clone(), second.device_id.clone()];
    expected.sort();
    assert_eq!(sids, expected);
}
both_backends!(deleting_a_user_tells_the_client_of_each_device);

async fn a_failing_receiver_is_retried_and_the_revocation_does_not_wait(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    receiver.refuse_next(2);
    let app = app_told_by(backend, &receiver).await;
    let signed = app.sign_in().await;

    let logout_all = app.post_bearer("/v1/me/logout-all", &signed.access_token).await;
    logout_all.assert_status(204);

    let tokens = receiver.wait_for_accepted(1).await;
    let all = receiver.received();
    assert_eq!(all.len(), 3, "two refusals, then the delivery: {all:?}");
    assert!(all[0].1 && all[1].1 && !all[2].1);
    let claims = verified_logout_token(&app, &tokens[0]).await;
    assert_eq!(claims["sid"], signed.device_id.as_str());
    eventually("the notice is done", || async { app.count("logout_notices").await == 0 }).await;
}
both_backends!(a_failing_receiver_is_retried_and_the_revocation_does_not_wait);

async fn a_client_without_a_uri_is_told_nothing_and_no_notice_stays(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;

    app.revoke(&signed.refresh_token, Auth::Public("app")).await.assert_status(200);

    eventually("the notice is dropped", || async { app.count("logout_notices").await == 0 }).await;
}
both_backends!(a_client_without_a_uri_is_told_nothing_and_no_notice_stays);

async fn two_replicas_send_each_notice_once(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    let app = app_told_by(backend, &receiver).await;
    let _second = app.restart_with(|_| {}).await;
    let sub = crate::support::fake_google::random_sub();
    let mut devices = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let signed = app.sign_in_as(&sub).await;
        devices.push(signed.device_id.clone());
        last = Some(signed);
    }

    app.post_bearer("/v1/me/logout-all", &last.unwrap().access_token).await.assert_status(204);

    receiver.wait_for_accepted(6).await;
    eventually("every notice is done", || async { app.count("logout_notices").await == 0 }).await;
    let mut sids: Vec<String> = Vec::new();
    for token in receiver.accepted() {
        sids.push(jwt_claims(&token)["sid"].as_str().unwrap().to_string());
    }
    sids.sort();
    devices.sort();
    assert_eq!(sids, devices, "each device's notice exactly once");
}
both_backends!(two_replicas_send_each_notice_once);

async fn a_notice_survives_a_restart(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    receiver.set_failing(true);
    let base = app_told_by(backend, &receiver).await;
    let db = tokio::task::spawn_blocking(move || TestDb::create(backend)).await.unwrap();
    let master_key = base.dir().join("master.key").display().to_string();
    let fakes = Some((base.facebook.as_ref(), base.limited_login.as_ref()));
    let config = base.dir().join("restart.toml");
    std::fs::write(&config, base.config.render_with(&db.url, &master_key, base.google.issuer(), fakes))
        .unwrap();
    let port = free_port();
    let path = config.clone();
    let first = tokio::task::spawn_blocking(move || start_replica(&path, port)).await.unwrap();
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("client_id", "app"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("subject_token", &base.google.id_token_for("restart-sub")),
    ];
    let signed =
        Answer::read(base.client.post(first.url("/oauth/token")).form(&form).send().await.unwrap()).await;
    signed.assert_status(200);
    let revoke = [("token", signed.str("refresh_token")), ("client_id", "app")];
    base.client.post(first.url("/oauth/revoke")).form(&revoke).send().await.unwrap();
    receiver.wait_for_requests(1).await;
    let db_url = db.admin_url.clone();
    eventually("the failure is recorded", || {
        let url = db_url.clone();
        async move {
            let db = TestDb::attach(backend, &url);
            tokio::task::spawn_blocking(move || db.count_blocking("logout_notices WHERE attempts >= 1"))
                .await
                .unwrap()
                == 1
        }
    })
    .await;
    first.kill();

    receiver.set_failing(false);
    let path = config.clone();
    let _second = tokio::task::spawn_blocking(move || start_replica(&path, port)).await.unwrap();

    // Within a claim's lease (15 s, should the first have died mid-delivery) and a poll (5 s).
    let tokens = receiver.wait_for_accepted_within(1, 30).await;
    assert_eq!(jwt_claims(&tokens[0])["sid"], signed.str("device_id"));
}
both_backends!(a_notice_survives_a_restart);

async fn a_client_made_in_the_console_can_be_told_too(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    let app = crate::admin::dev_app(backend).await;
    let (mut browser, _) = crate::admin::signed_in_admin(&app, "ada").await;
    let csrf = crate::admin::csrf_of(&browser.get("/admin/clients").await);
    let bad = [
        ("csrf", csrf.as_str()),
        ("client_id", "told"),
        ("kind", "confidential"),
        ("scopes", "api"),
        ("backchannel_logout_uri", "ftp://nowhere.example/x"),
    ];
    assert_eq!(browser.post("/admin/clients", &bad).await.status, 400, "not an http(s) URI");
    let mut form = bad;
    form[4].1 = receiver.uri.as_str();
    let made = browser.post("/admin/clients", &form).await;
    let made = crate::admin::follow_created(&mut browser, made).await;
    let secret =
        made.body.split(r#"id="secret" readonly value=""#).nth(1).unwrap().split('"').next().unwrap();

    let token = app.google.id_token_for("told-sub");
    let signed =
        Tokens::from_answer(&app.exchange_as(Auth::Basic("told", secret), &token, &[]).await, "told-sub");
    app.revoke(&signed.refresh_token, Auth::Basic("told", secret)).await.assert_status(200);

    let tokens = receiver.wait_for_accepted(1).await;
    assert_eq!(jwt_claims(&tokens[0])["aud"], "told");
    assert_eq!(jwt_claims(&tokens[0])["sid"], signed.device_id.as_str());
}
both_backends!(a_client_made_in_the_console_can_be_told_too);

async fn a_revocation_by_the_command_line_is_told_to_the_client(backend: Backend) {
    let receiver = LogoutReceiver::start().await;
    let app = app_told_by(backend, &receiver).await;
    let signed = app.sign_in().await;

    let out = app.run_cli(&["users", "revoke-all", &signed.user_id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Within the receiver's 10 s wait: woken by the command line's commit (SQLite: the
    // watcher; PostgreSQL: LISTEN), not by the sender's fallback poll (30 s).
    let tokens = receiver.wait_for_accepted(1).await;
    assert_eq!(jwt_claims(&tokens[0])["sid"], signed.device_id.as_str());
}
both_backends!(a_revocation_by_the_command_line_is_told_to_the_client);
