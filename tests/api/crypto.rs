//! `/v1/crypto` and per-user data keys: round trips for users and services, tampering,
//! rotation and rewrap, master-key rotation, crypto-shredding and personal data at rest.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support::*;

fn b64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// An app whose confidential client `svc` is granted scope `crypto`.
async fn spawn_crypto_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.svc_scopes = vec!["api".into(), "crypto".into()]).await
}

async fn encrypt(app: &TestApp, token: &str, plaintext: &[u8], context: &str) -> Answer {
    app.post_json_bearer(
        "/v1/crypto/encrypt",
        token,
        &json!({"plaintext": b64(plaintext), "context": context}),
    )
    .await
}

async fn decrypt(app: &TestApp, token: &str, ciphertext: &str, context: &str) -> Answer {
    app.post_json_bearer("/v1/crypto/decrypt", token, &json!({"ciphertext": ciphertext, "context": context}))
        .await
}

async fn service(app: &TestApp, op: &str, body: Value) -> Answer {
    app.post_json_basic(&format!("/v1/crypto/{op}"), "svc", SVC_SECRET, &body).await
}

async fn a_user_round_trips_data_under_their_own_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.sign_in().await;

    let sealed = encrypt(&app, &user.access_token, b"my diary", "notes").await;

    sealed.assert_status(200);
    assert_eq!(sealed.body["key_version"], json!(1));
    let ciphertext = sealed.str("ciphertext").to_string();
    assert!(!ciphertext.contains("my diary") && ciphertext.starts_with("idb1:v1:"), "{ciphertext}");
    let opened = decrypt(&app, &user.access_token, &ciphertext, "notes").await;
    opened.assert_status(200);
    assert_eq!(opened.str("plaintext"), b64(b"my diary"));
    assert_eq!(opened.header("cache-control").as_deref(), Some("no-store"));
}
both_backends!(a_user_round_trips_data_under_their_own_key);

async fn a_service_with_scope_crypto_works_for_a_named_user_and_is_audited(backend: Backend) {
    let app = spawn_crypto_app(backend).await;
    let user = app.sign_in().await;
    let before = app.count("audit_events WHERE actor = 'client:svc'").await;

    let sealed = service(&app, "encrypt", json!({"plaintext": b64(b"x"), "user_id": user.user_id})).await;
    sealed.assert_status(200);
    let by_user = decrypt(&app, &user.access_token, sealed.str("ciphertext"), "").await;
    let by_service =
        service(&app, "decrypt", json!({"ciphertext": sealed.str("ciphertext"), "user_id": user.user_id}))
            .await;

    assert_eq!(by_user.str("plaintext"), b64(b"x"), "the user reads what the service wrote");
    assert_eq!(by_service.str("plaintext"), b64(b"x"));
    let audited = app.count("audit_events WHERE actor = 'client:svc' AND action LIKE 'crypto.%'").await;
    assert_eq!(audited - before, 2, "every service call is audited");
}
both_backends!(a_service_with_scope_crypto_works_for_a_named_user_and_is_audited);

async fn services_without_scope_crypto_or_with_a_bad_secret_are_refused(backend: Backend) {
    let app = spawn_app(backend).await; // svc: scopes ["api"]
    let user = app.sign_in().await;
    let body = json!({"plaintext": b64(b"x"), "user_id": user.user_id});

    service(&app, "encrypt", body.clone()).await.assert_status(403);
    app.post_json_basic("/v1/crypto/encrypt", "svc", "wrong", &body).await.assert_status(401);
    let anonymous = app.client.post(app.url("/v1/crypto/encrypt")).json(&body).send().await.unwrap();
    Answer::read(anonymous).await.assert_status(401);
}
both_backends!(services_without_scope_crypto_or_with_a_bad_secret_are_refused);

async fn a_user_cannot_name_another_user(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (app.sign_in().await, app.sign_in().await);

    let body = json!({"plaintext": b64(b"x"), "user_id": b.user_id});
    let a_for_b = app.post_json_bearer("/v1/crypto/encrypt", &a.access_token, &body).await;

    a_for_b.assert_status(403);
}
both_backends!(a_user_cannot_name_another_user);

async fn every_altered_byte_another_users_ciphertext_and_another_context_give_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (app.sign_in().await, app.sign_in().await);
    let sealed = encrypt(&app, &a.access_token, b"secret", "ctx").await;
    let ciphertext = sealed.str("ciphertext").to_string();

    for i in 0..ciphertext.len() {
        let mut bytes = ciphertext.clone().into_bytes();
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        let altered = String::from_utf8(bytes).unwrap();
        let a = decrypt(&app, &a.access_token, &altered, "ctx").await;
        assert_eq!(a.status.as_u16(), 400, "byte {i} of {ciphertext} altered: {} {}", a.status, a.text);
    }
    decrypt(&app, &b.access_token, &ciphertext, "ctx").await.assert_status(400);
    decrypt(&app, &a.access_token, &ciphertext, "other").await.assert_status(400);
    decrypt(&app, &a.access_token, &ciphertext, "").await.assert_status(400);
    decrypt(&app, &a.access_token, "not a ciphertext", "ctx").await.assert_status(400);
    let bad_b64 =
        app.post_json_bearer("/v1/crypto/encrypt", &a.access_token, &json!({"plaintext": "%%%"})).await;
    bad_b64.assert_status(400);
    assert_eq!(bad_b64.header("content-type").as_deref(), Some("application/problem+json"));
}
both_backends!(every_altered_byte_another_users_ciphertext_and_another_context_give_400);

async fn after_rotate_old_ciphertexts_decrypt_and_rewrap_moves_them_to_the_new_version(backend: Backend) {
    let app = spawn_app(backend).await;
    let user = app.sign_in().await;
    let old = encrypt(&app, &user.access_token, b"v1 data", "c").await.str("ciphertext").to_string();

    let rotated = app.post_json_bearer("/v1/crypto/rotate", &user.access_token, &json!({})).await;

    rotated.assert_status(200);
    assert_eq!(rotated.body["key_version"], json!(2));
    assert_eq!(decrypt(&app, &user.access_token, &old, "c").await.str("plaintext"), b64(b"v1 data"));
    let fresh = encrypt(&app, &user.access_token, b"new", "c").await;
    assert_eq!(fresh.body["key_version"], json!(2));
    let moved = app
        .post_json_bearer(
            "/v1/crypto/rewrap",
            &user.access_token,
            &json!({"ciphertext": old, "context": "c"}),
        )
        .await;
    moved.assert_status(200);
    let moved_ct = moved.str("ciphertext").to_string();
    assert!(moved_ct.starts_with("idb1:v2:"), "{moved_ct}");
    assert!(moved.body.get("plaintext").is_none(), "rewrap never returns plaintext: {}", moved.text);
    assert_eq!(decrypt(&app, &user.access_token, &moved_ct, "c").await.str("plaintext"), b64(b"v1 data"));
    assert_eq!(app.count("audit_events WHERE action = 'crypto.rotate'").await, 1);
}
both_backends!(after_rotate_old_ciphertexts_decrypt_and_rewrap_moves_them_to_the_new_version);

async fn a_wrapped_key_copied_onto_another_users_row_does_not_unwrap(backend: Backend) {
    let app = spawn_app(backend).await;
    let (a, b) = (app.sign_in().await, app.sign_in().await);
    let a_secret = encrypt(&app, &a.access_token, b"a's data", "").await.str("ciphertext").to_string();
    app.execute_sql(&format!(
        "UPDATE user_keys SET wrapped = (SELECT wrapped FROM user_keys WHERE user_id = '{}') WHERE user_id = '{}'",
        a.user_id, b.user_id
    ))
    .await;
    let fresh = app.restart_with(|_| {}).await; // no cached keys

    let as_b = decrypt(&fresh, &b.access_token, &a_secret, "").await;
    let b_encrypts = encrypt(&fresh, &b.access_token, b"x", "").await;

    assert_ne!(as_b.status.as_u16(), 200, "{}", as_b.text);
    assert!(!as_b.text.contains(&b64(b"a's data")));
    assert_eq!(b_encrypts.status.as_u16(), 500, "B's key cannot be unwrapped: {}", b_encrypts.text);
    assert_eq!(decrypt(&fresh, &a.access_token, &a_secret, "").await.str("plaintext"), b64(b"a's data"));
}
both_backends!(a_wrapped_key_copied_onto_another_users_row_does_not_unwrap);

async fn a_deleted_users_ciphertexts_give_404_and_their_keys_are_gone(backend: Backend) {
    let app = spawn_crypto_app(backend).await;
    let user = app.sign_in().await;
    let sealed = encrypt(&app, &user.access_token, b"bye", "").await.str("ciphertext").to_string();

    let deleted = app.delete_bearer("/v1/me", &user.access_token).await;

    deleted.assert_status(204);
    let after = service(&app, "decrypt", json!({"ciphertext": sealed, "user_id": user.user_id})).await;
    after.assert_status(404);
    for table in ["users", "identities", "devices", "refresh_tokens", "user_keys"] {
        let left = app
            .count(&format!(
                "{table} WHERE {} = '{}'",
                if table == "users" {
                    "id"
                } else if table == "devices" || table == "identities" || table == "user_keys" {
                    "user_id"
                } else {
                    "device_id"
                },
                if table == "refresh_tokens" { &user.device_id } else { &user.user_id }
            ))
            .await;
        assert_eq!(left, 0, "{table} still holds the user's rows");
    }
    app.get_me(&user.access_token).await.assert_status(401);
    assert_eq!(app.count("audit_events WHERE action = 'user.delete'").await, 1);
}
both_backends!(a_deleted_users_ciphertexts_give_404_and_their_keys_are_gone);

async fn personal_data_is_stored_encrypted_and_shown_decrypted(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app
        .google
        .id_token(json!({"sub": "555", "email": "Ada.Lovelace@Example.com", "name": "Ada Lovelace"}));
    let user = Tokens::from_answer(&app.exchange(&token, &[]).await, "555");

    let me = app.get_me(&user.access_token).await;

    assert_eq!(me.body["display_name"], json!("Ada Lovelace"), "{}", me.text);
    assert_eq!(me.body["email"], json!("Ada.Lovelace@Example.com"), "{}", me.text);
    assert_eq!(app.count("users WHERE email IS NOT NULL OR display_name IS NOT NULL").await, 0);
    assert_eq!(app.count("identities WHERE email IS NOT NULL").await, 0);
    assert_eq!(app.count("users WHERE email_ct LIKE '%Ada%' OR display_name_ct LIKE '%Ada%'").await, 0);
    assert_eq!(app.count("identities WHERE email_index IS NOT NULL").await, 1);
}
both_backends!(personal_data_is_stored_encrypted_and_shown_decrypted);

/// The app's keyring, read from its key file(s), as an operator's audit would.
fn keyring_of(app: &TestApp, files: &[String]) -> idbridge::crypto::keyring::MasterKeyring {
    let sources: Vec<String> = if files.is_empty() {
        vec![format!("file:{}", app.dir().join("master.key").display())]
    } else {
        files.iter().map(|f| format!("file:{f}")).collect()
    };
    idbridge::crypto::keyring::MasterKeyring::load(&sources).expect("load keyring")
}

async fn master_key_rotation_stopped_half_way_then_rerun_leaves_every_key_under_the_new_one(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut users = Vec::new();
    for i in 0..12 {
        let user = app.sign_in().await;
        let ct = encrypt(&app, &user.access_token, format!("data {i}").as_bytes(), "")
            .await
            .str("ciphertext")
            .to_string();
        users.push((user, ct));
    }
    let old = app.dir().join("master.key").display().to_string();
    let new = write_master_key_named(app.dir(), "new.key");
    let both = app.restart_with(|c| c.master_keys = vec![new.clone(), old.clone()]).await;

    let half = both.run_cli(&["keys", "rotate-master", "--batch-size", "5", "--max-batches", "1"]).await;
    assert!(half.status.success(), "{}", String::from_utf8_lossy(&half.stderr));
    let status = both.run_cli(&["keys", "status"]).await;
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    let ids = keyring_of(&app, &[new.clone(), old.clone()]).key_ids();
    assert!(
        status.contains(&ids[0]) && status.contains(&ids[1]),
        "both keys wrap something half way:\n{status}"
    );
    let rest = both.run_cli(&["keys", "rotate-master", "--batch-size", "5"]).await;
    assert!(rest.status.success(), "{}", String::from_utf8_lossy(&rest.stderr));
    let again = both.run_cli(&["keys", "rotate-master"]).await;
    assert!(again.status.success(), "a rerun is harmless: {}", String::from_utf8_lossy(&again.stderr));
    let only_new = app.restart_with(|c| c.master_keys = vec![new.clone()]).await;

    for (i, (user, ct)) in users.iter().enumerate() {
        let a = decrypt(&only_new, &user.access_token, ct, "").await;
        assert_eq!(a.str("plaintext"), b64(format!("data {i}").as_bytes()), "user {i}");
    }
    let count = only_new.count(&format!("user_keys WHERE wrapped_by = '{}'", ids[0])).await;
    assert_eq!(count, 12, "every user key is under the new master key");
}
both_backends!(master_key_rotation_stopped_half_way_then_rerun_leaves_every_key_under_the_new_one);

async fn a_keyring_without_a_key_still_in_use_is_refused_at_start(backend: Backend) {
    let app = spawn_app(backend).await;
    app.sign_in().await;
    let other = write_master_key_named(app.dir(), "unrelated.key");
    let mut config = app.config.clone();
    config.master_keys = vec![other];
    let path = app.dir().join("wrong.toml");
    std::fs::write(&path, config.render(&app.db.url, "unused", app.google.issuer())).unwrap();

    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_idbridge"))
            .args(["serve", "--config"])
            .arg(&path)
            .output()
    })
    .await
    .unwrap()
    .unwrap();

    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keys.master_keys") && stderr.contains("not in the keyring"), "{stderr}");
}
both_backends!(a_keyring_without_a_key_still_in_use_is_refused_at_start);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_key_appears_in_plaintext_in_the_sqlite_files() {
    let app = spawn_app(Backend::Sqlite).await;
    let user = app.sign_in().await;
    encrypt(&app, &user.access_token, b"x", "").await.assert_status(200);
    let path = app.db.url.trim_start_matches("sqlite://").to_string();
    let row = {
        use diesel::prelude::*;
        let mut conn = diesel::SqliteConnection::establish(&path).unwrap();
        diesel::sql_query(format!(
            "SELECT version, wrapped FROM user_keys WHERE user_id = '{}'",
            user.user_id
        ))
        .get_result::<KeyRow>(&mut conn)
        .unwrap()
    };
    let keys = idbridge::crypto::user_keys::UserKeys::new(std::sync::Arc::new(keyring_of(&app, &[])));
    let dek = keys.unwrap_stored(&user.user_id, row.version, &row.wrapped).expect("the key unwraps");

    for suffix in ["", "-wal"] {
        let bytes = std::fs::read(format!("{path}{suffix}")).unwrap_or_default();
        assert!(
            !bytes.windows(dek.len()).any(|w| w == dek.as_slice()),
            "the data key is in {path}{suffix} in plaintext"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_key_appears_in_plaintext_in_a_postgres_dump() {
    let app = spawn_app(Backend::Postgres).await;
    let user = app.sign_in().await;
    encrypt(&app, &user.access_token, b"x", "").await.assert_status(200);
    let url = app.db.url.clone();
    let query = format!("SELECT version, wrapped FROM user_keys WHERE user_id = '{}'", user.user_id);
    let (row, dump) = tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut conn = diesel::PgConnection::establish(&url).unwrap();
        let row = diesel::sql_query(query).get_result::<KeyRow>(&mut conn).unwrap();
        let dump =
            std::process::Command::new("pg_dump").arg(&url).output().expect("pg_dump (postgresql-client)");
        (row, dump)
    })
    .await
    .unwrap();
    assert!(dump.status.success(), "pg_dump: {}", String::from_utf8_lossy(&dump.stderr));
    let keys = idbridge::crypto::user_keys::UserKeys::new(std::sync::Arc::new(keyring_of(&app, &[])));
    let dek = keys.unwrap_stored(&user.user_id, row.version, &row.wrapped).expect("the key unwraps");
    let hex: String = dek.iter().map(|b| format!("{b:02x}")).collect();

    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(text.contains("user_keys"), "the dump holds the key table");
    assert!(!text.contains(&hex), "the data key is in the dump in plaintext (hex)");
    assert!(!dump.stdout.windows(dek.len()).any(|w| w == dek.as_slice()), "the data key is in the dump");
}

#[derive(diesel::QueryableByName)]
struct KeyRow {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    version: i32,
    #[diesel(sql_type = diesel::sql_types::Binary)]
    wrapped: Vec<u8>,
}

async fn users_written_before_encryption_are_moved_at_start(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = fake_google::now();
    app.execute_sql(&format!(
        "INSERT INTO users (id, created_at, display_name, email, is_admin) VALUES ('0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80', {t}, 'Old Timer', 'old@example.com', FALSE);
         INSERT INTO identities (id, user_id, provider, subject, email, linked_at, last_login_at) VALUES ('0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f81', '0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80', 'google', 'old-sub', 'old@example.com', {t}, {t});"
    ))
    .await;

    let restarted = app.restart_with(|_| {}).await;
    let user = restarted.sign_in_as("old-sub").await;

    assert_eq!(user.user_id, "0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80");
    let me = restarted.get_me(&user.access_token).await;
    assert_eq!(me.body["email"], json!("old@example.com"), "{}", me.text);
    assert_eq!(me.body["display_name"], json!("Old Timer"), "{}", me.text);
    assert_eq!(restarted.count("users WHERE email IS NOT NULL OR display_name IS NOT NULL").await, 0);
    assert_eq!(restarted.count("identities WHERE email IS NOT NULL OR email_index IS NULL").await, 0);
}
both_backends!(users_written_before_encryption_are_moved_at_start);

async fn an_email_is_found_through_the_blind_index(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.google.id_token(json!({"sub": "777", "email": "grace@example.com"}));
    let grace = Tokens::from_answer(&app.exchange(&token, &[]).await, "777");
    app.sign_in().await;

    let db = idbridge::db::Db::new(&app.db.url, 1).unwrap();
    let keyring = keyring_of(&app, &[]);
    let found = db
        .write(move |conn| {
            let secret = idbridge::crypto::server_secrets::load_or_create(
                conn,
                &keyring,
                idbridge::crypto::server_secrets::EMAIL_BLIND_INDEX,
            )
            .map_err(|e| {
                idbridge::db::DbError::Query(diesel::result::Error::QueryBuilderError(e.to_string().into()))
            })?;
            let index = idbridge::crypto::blind_index::BlindIndex(secret);
            idbridge::accounts::profile::find_by_email(conn, &index, "  Grace@Example.COM ")
        })
        .await
        .unwrap();

    assert_eq!(found, vec![grace.user_id]);
}
both_backends!(an_email_is_found_through_the_blind_index);

/// A service may name a user in any spelling of the UUID; the user's keys are found, never
/// reported destroyed. A malformed id is 400.
async fn a_service_names_a_user_in_any_uuid_spelling(backend: Backend) {
    let app = spawn_crypto_app(backend).await;
    let user = app.sign_in().await;
    let sealed = encrypt(&app, &user.access_token, b"kept", "").await;
    let ciphertext = sealed.str("ciphertext").to_string();
    let id = uuid::Uuid::parse_str(&user.user_id).unwrap();

    for spelling in [
        user.user_id.to_uppercase(),
        format!("{{{}}}", user.user_id),
        id.simple().to_string(),
        id.simple().to_string().to_uppercase(),
    ] {
        let opened = service(&app, "decrypt", json!({"ciphertext": ciphertext, "user_id": spelling})).await;
        opened.assert_status(200);
        assert_eq!(opened.str("plaintext"), b64(b"kept"), "{spelling}");
    }
    let by_user = json!({"ciphertext": ciphertext, "user_id": user.user_id.to_uppercase()});
    app.post_json_bearer("/v1/crypto/decrypt", &user.access_token, &by_user).await.assert_status(200);
    for malformed in ["not-a-uuid", "", "123"] {
        let refused = service(&app, "decrypt", json!({"ciphertext": ciphertext, "user_id": malformed})).await;
        refused.assert_status(400);
    }
}
both_backends!(a_service_names_a_user_in_any_uuid_spelling);

/// Refused service calls (another user's ciphertext, a tampered one, a deleted user) are
/// audited as `crypto.refused`, like the successful ones.
async fn refused_service_calls_are_audited(backend: Backend) {
    let app = spawn_crypto_app(backend).await;
    let (a, b) = (app.sign_in().await, app.sign_in().await);
    let sealed = encrypt(&app, &a.access_token, b"secret", "").await;
    let ciphertext = sealed.str("ciphertext").to_string();
    let mut tampered = ciphertext.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();

    service(&app, "decrypt", json!({"ciphertext": ciphertext, "user_id": b.user_id}))
        .await
        .assert_status(400);
    service(&app, "decrypt", json!({"ciphertext": tampered, "user_id": a.user_id})).await.assert_status(400);
    let gone = uuid::Uuid::new_v4().to_string();
    service(&app, "rewrap", json!({"ciphertext": ciphertext, "user_id": gone})).await.assert_status(404);

    let other_gone = uuid::Uuid::new_v4().to_string();
    service(&app, "rotate", json!({"user_id": other_gone})).await.assert_status(404);
    service(&app, "decrypt", json!({"ciphertext": ciphertext, "user_id": "not-a-uuid"}))
        .await
        .assert_status(400);
    service(&app, "encrypt", json!({"plaintext": "%%%", "user_id": a.user_id})).await.assert_status(400);
    let without_crypto = app.restart_with(|c| c.svc_scopes = vec!["api".into()]).await;
    let no_scope = json!({"plaintext": b64(b"x"), "user_id": a.user_id});
    service(&without_crypto, "encrypt", no_scope).await.assert_status(403);

    let refused = |user: &str| {
        format!(
            "audit_events WHERE actor = 'client:svc' AND action = 'crypto.refused' AND user_id = '{user}'"
        )
    };
    assert_eq!(app.count(&refused(&b.user_id)).await, 1, "another user's ciphertext is audited");
    assert_eq!(
        app.count(&refused(&a.user_id)).await,
        2,
        "a tampered ciphertext and bad plaintext are audited"
    );
    assert_eq!(app.count(&refused(&gone)).await, 1, "a deleted user is audited");
    assert_eq!(app.count(&refused(&other_gone)).await, 1, "rotating a deleted user's key is audited");
    let unnamed = "audit_events WHERE actor = 'client:svc' AND action = 'crypto.refused' AND user_id IS NULL";
    assert_eq!(app.count(unnamed).await, 2, "a malformed user id and a missing scope are audited");
    assert_eq!(app.count("audit_events WHERE action = 'crypto.decrypt'").await, 0, "nothing was decrypted");
}
both_backends!(refused_service_calls_are_audited);

/// A user's token needs scope `api` for `/v1/crypto`; `openid` alone is 403 insufficient_scope.
async fn a_token_without_scope_api_cannot_use_crypto(backend: Backend) {
    let app = spawn_app(backend).await;
    let openid_only = app.exchange(&app.google.id_token_for("openid-only"), &[("scope", "openid")]).await;
    let openid_only = Tokens::from_answer(&openid_only, "openid-only");

    let sealed = encrypt(&app, &openid_only.access_token, b"x", "").await;

    sealed.assert_status(403);
    let challenge = sealed.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("insufficient_scope") && challenge.contains("scope=\"api\""), "{challenge}");
    let rotate = app.post_bearer("/v1/crypto/rotate", &openid_only.access_token).await;
    rotate.assert_status(403);
    app.get_me(&openid_only.access_token).await.assert_status(200);
}
both_backends!(a_token_without_scope_api_cannot_use_crypto);
