//! The audit log's hash chain: `idbridge audit verify` names the first event that was
//! altered, removed or put in behind its back; retention keeps the rest verifiable; `audit
//! export` gives every event as a JSON line.

use serde_json::Value;

use crate::support::*;

/// An app with three sign-ins in its audit log, sealed (by `audit verify`, which seals what is
/// pending first, as the server does every second).
async fn app_with_sealed_events(backend: Backend) -> TestApp {
    let app = spawn_app(backend).await;
    for _ in 0..3 {
        app.sign_in().await;
    }
    let verified = app.run_cli(&["audit", "verify"]).await;
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert_eq!(app.count("audit_events WHERE seq IS NULL").await, 0);
    app
}

async fn export(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let out = app.run_cli(&[&["audit", "export"], args].concat()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).expect(l)).collect()
}

/// `audit verify` fails (exit 1) with a message containing every `needle`.
async fn assert_verify_fails(app: &TestApp, needles: &[&str]) {
    let out = app.run_cli(&["audit", "verify"]).await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout {} stderr {said}", String::from_utf8_lossy(&out.stdout));
    for needle in needles {
        assert!(said.contains(needle), "`{needle}` not in: {said}");
    }
}

async fn an_untouched_chain_verifies_and_every_event_exports(backend: Backend) {
    let app = app_with_sealed_events(backend).await;

    let out = app.run_cli(&["audit", "verify"]).await;
    let events = export(&app, &[]).await;

    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("the audit chain verifies: 3 events checked, up to seq 3"), "{said}");
    assert_eq!(events.len(), 3);
    for event in &events {
        for field in ["id", "at", "action", "actor", "user_id", "device_id", "ip", "detail", "hash"] {
            assert!(event.get(field).is_some(), "{field} missing: {event}");
        }
        assert_eq!(event["action"], "sign_in");
        assert!(event["hash"].as_str().is_some_and(|h| h.len() == 43), "{event}");
        assert!(event["at"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    }
    assert!(export(&app, &["--since", "2999-01-01T00:00:00Z"]).await.is_empty());
    assert_eq!(export(&app, &["--until", "2999-01-01T01:00:00+01:00"]).await.len(), 3);
}
both_backends!(an_untouched_chain_verifies_and_every_event_exports);

async fn an_altered_event_is_named(backend: Backend) {
    let app = app_with_sealed_events(backend).await;
    let second = export(&app, &[]).await[1]["id"].as_str().unwrap().to_string();

    app.execute_sql("UPDATE audit_events SET detail = 'nothing happened' WHERE seq = 2").await;

    assert_verify_fails(&app, &[&second, "seq 2", "altered"]).await;
}
both_backends!(an_altered_event_is_named);

async fn a_removed_event_is_found(backend: Backend) {
    let app = app_with_sealed_events(backend).await;
    let third = export(&app, &[]).await[2]["id"].as_str().unwrap().to_string();

    app.execute_sql("DELETE FROM audit_events WHERE seq = 2").await;

    assert_verify_fails(&app, &[&third, "seq 2 is missing"]).await;
}
both_backends!(a_removed_event_is_found);

async fn removing_the_newest_events_is_found(backend: Backend) {
    let app = app_with_sealed_events(backend).await;

    app.execute_sql("DELETE FROM audit_events WHERE seq = 3").await;

    assert_verify_fails(&app, &["newest", "seq 3"]).await;
}
both_backends!(removing_the_newest_events_is_found);

/// Someone with the database, not the key, puts an event in with the next number and a
/// made-up link, and moves the head to it.
async fn an_event_put_in_with_a_made_up_link_is_named(backend: Backend) {
    let app = app_with_sealed_events(backend).await;
    let forged = "0190f0f0-0000-7000-8000-000000000001";
    let link = "A".repeat(43);

    app.execute_sql(&format!(
        "INSERT INTO audit_events (id, at, actor, action, detail, seq, hash) \
         VALUES ('{forged}', 1, 'cli', 'user.enable', 'forged', 4, '{link}'); \
         UPDATE audit_chain SET sealed_seq = 4, sealed_hash = '{link}'"
    ))
    .await;

    assert_verify_fails(&app, &[forged, "seq 4", "inserted"]).await;
}
both_backends!(an_event_put_in_with_a_made_up_link_is_named);

/// Retention removes old events and moves the checkpoint: what is left, and what comes after,
/// still verifies.
async fn retention_keeps_the_chain_verifiable(backend: Backend) {
    let app = app_with_sealed_events(backend).await;
    let db = idbridge::db::Db::new(&app.db.url, 1).expect("open the database");
    let retention = default_retention();
    let later = idbridge::clock::now() + retention.audit_events_secs + 60;
    let liveness = std::sync::Arc::new(idbridge::sessions::Liveness::default());

    let swept = idbridge::housekeeping::sweep(&db, &liveness, retention, later).await.expect("sweep");
    app.sign_in().await;
    let out = app.run_cli(&["audit", "verify"]).await;

    assert_eq!(swept.audit_events, 3);
    assert_eq!(app.count("audit_events").await, 1);
    assert_eq!(app.count("audit_chain WHERE checkpoint_seq = 3").await, 1);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("1 events checked, up to seq 4"), "{said}");
}
both_backends!(retention_keeps_the_chain_verifiable);

/// The server seals new events by itself, shortly after they commit.
async fn the_server_seals_new_events_by_itself(backend: Backend) {
    let app = spawn_app(backend).await;

    app.sign_in().await;

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.count("audit_events WHERE seq IS NULL").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the sign-in's event was never sealed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.count("audit_events WHERE seq = 1 AND hash IS NOT NULL").await, 1);
    assert_eq!(app.count("audit_chain WHERE sealed_seq = 1").await, 1);
}
both_backends!(the_server_seals_new_events_by_itself);

/// A refused sign-in is audited (`sign_in.refused`) without the assertion: a forged token
/// by the client, a disabled user's by the user.
async fn refused_sign_ins_are_audited_without_the_assertion(backend: Backend) {
    let app = spawn_app(backend).await;
    let signed = app.sign_in().await;
    let good = app.google.id_token_for(&signed.google_sub);
    let (head, _) = good.rsplit_once('.').unwrap();
    let forged = format!("{head}.{}", "A".repeat(86));
    assert!(app.run_cli(&["users", "disable", &signed.user_id]).await.status.success());

    let forged_answer = app.exchange(&forged, &[]).await;
    let disabled_answer = app.exchange(&app.google.id_token_for(&signed.google_sub), &[]).await;

    assert_eq!(forged_answer.status, 400, "{}", forged_answer.text);
    assert_eq!(disabled_answer.status, 400, "{}", disabled_answer.text);
    let events = export(&app, &[]).await;
    let refused: Vec<&Value> = events.iter().filter(|e| e["action"] == "sign_in.refused").collect();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert_eq!(refused[0]["actor"], "client:app");
    assert_eq!(refused[0]["user_id"], Value::Null);
    assert!(refused[0]["detail"].as_str().unwrap().contains("signature"), "{}", refused[0]);
    assert_eq!(refused[1]["actor"], format!("user:{}", signed.user_id));
    assert_eq!(refused[1]["user_id"], signed.user_id.as_str());
    assert!(refused[1]["detail"].as_str().unwrap().contains("disabled"), "{}", refused[1]);
    for event in refused {
        let text = event.to_string();
        assert!(!text.contains(head) && !text.contains("eyJ"), "the assertion is in the log: {text}");
    }
}
both_backends!(refused_sign_ins_are_audited_without_the_assertion);
