//! The console as admins use it every day, on both backends: search by name words and e-mail
//! prefixes (names and e-mails stay encrypted), and confirmations that know the current state.

use serde_json::json;

use crate::admin::{csrf_of, dev_app, follow_created, signed_in_admin};
use crate::support::*;

/// The user ids a users-page search lists, in order.
fn listed(body: &str) -> Vec<String> {
    body.split(r#"<td data-label="User id"><code>"#)
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap().to_string())
        .collect()
}

async fn search_finds_users_by_name_words_and_email_prefix(backend: Backend) {
    let app = dev_app(backend).await;
    let mut made = Vec::new();
    for (sub, name, email) in [
        ("s-ada", "Ada Lovelace-Byron", "ada.lovelace@example.com"),
        ("s-adam", "Adam Smith", "adam@econ.example"),
        ("s-grace", "Grace Hopper", "grace@navy.example"),
        ("s-zoe", "<b>Zoë</b> Ünal", "zoe@example.org"),
    ] {
        let token = app.google.id_token(json!({"sub": sub, "name": name, "email": email}));
        made.push(Tokens::from_answer(&app.exchange(&token, &[]).await, sub).user_id);
    }
    let (ada, adam, grace, zoe) = (&made[0], &made[1], &made[2], &made[3]);
    let (mut browser, _) = signed_in_admin(&app, "root").await;
    let sorted = |ids: &[&String]| {
        let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(search(&mut browser, "ada").await, sorted(&[ada, adam]), "a name word's start");
    assert_eq!(search(&mut browser, "ADA LOVE").await, sorted(&[ada]), "every word typed, any case");
    assert_eq!(search(&mut browser, "lovelace ada").await, sorted(&[ada]), "in any order");
    assert_eq!(search(&mut browser, "byr").await, sorted(&[ada]), "a word after a hyphen");
    assert_eq!(search(&mut browser, "hop").await, sorted(&[grace]));
    assert_eq!(search(&mut browser, "zoë ün").await, sorted(&[zoe]), "letters beyond ASCII");
    assert_eq!(search(&mut browser, "grace@na").await, sorted(&[grace]), "an e-mail's start");
    assert_eq!(search(&mut browser, "ada.lov").await, sorted(&[ada]));
    assert_eq!(search(&mut browser, "adam@econ.example").await, sorted(&[adam]), "an exact e-mail");
    assert_eq!(search(&mut browser, "ada@").await, Vec::<String>::new(), "ada@ starts no e-mail");
    assert_eq!(search(&mut browser, "hopperx").await, Vec::<String>::new());
    assert_eq!(search(&mut browser, "b").await, Vec::<String>::new(), "one letter is too short");

    // At rest: only keyed terms, a multiple of 16 a user, and no plaintext.
    let terms = app.count(&format!("user_search_terms WHERE user_id = '{ada}'")).await;
    assert!(terms > 0 && terms % 16 == 0, "{terms}");
    assert_eq!(app.count("users WHERE display_name IS NOT NULL OR email IS NOT NULL").await, 0);

    // A user deleted is no longer found, and their terms are gone with them.
    let csrf = csrf_of(&browser.get(&format!("/admin/users/{grace}")).await);
    browser.post(&format!("/admin/users/{grace}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(app.count(&format!("user_search_terms WHERE user_id = '{grace}'")).await, 0);
    let page = browser.get("/admin/users?q=hop").await;
    assert!(listed(&page.body).is_empty() && page.body.contains("0 found"), "{}", page.body);
}
both_backends!(search_finds_users_by_name_words_and_email_prefix);

/// The user ids a search for `q` lists, sorted.
async fn search(browser: &mut Browser<'_>, q: &str) -> Vec<String> {
    let page = browser.get(&format!("/admin/users?q={}", url_encode(q))).await;
    assert_eq!(page.status, 200, "{q}: {}", page.body);
    let mut ids = listed(&page.body);
    ids.sort();
    ids
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Each destructive change has a confirmation step; one that is moot (already so) says what is
/// so, offers no button, and its POST changes and audits nothing (409).
async fn confirmations_know_the_current_state(backend: Backend) {
    let app = dev_app(backend).await;
    let phone = app.sign_in_as("henry-sub").await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    let user = format!("/admin/users/{}", phone.user_id);
    let csrf = csrf_of(&browser.get(&user).await);

    // Revoke a device: confirmed, done; its confirmation then says it already ended.
    let confirm = format!("{user}/confirm?action=revoke-device&device={}", phone.device_id);
    let page = browser.get(&confirm).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let revoke = format!("{user}/devices/{}/revoke", phone.device_id);
    assert!(page.body.contains(&format!(r#"action="{revoke}""#)), "{}", page.body);
    assert_eq!(browser.post(&revoke, &[("csrf", &csrf)]).await.status, 303);
    let events = app.count("audit_events").await;
    let page = browser.get(&confirm).await;
    assert_eq!(page.status, 409, "{}", page.body);
    assert!(
        page.body.contains("already ended")
            && !page.body.contains("<form method=\"post\" action=\"/admin/users")
    );
    let again = browser.post(&revoke, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 409, "confirming again does not report success: {}", again.body);
    assert!(again.body.contains("Nothing was changed"));
    // Nothing left to revoke.
    assert_eq!(browser.get(&format!("{user}/confirm?action=revoke-all")).await.status, 409);
    assert_eq!(browser.post(&format!("{user}/revoke-all"), &[("csrf", &csrf)]).await.status, 409);

    // Disable twice, enable twice: the second of each is moot.
    assert_eq!(browser.get(&format!("{user}/confirm?action=enable")).await.status, 409, "not disabled");
    assert_eq!(browser.post(&format!("{user}/disable"), &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(browser.get(&format!("{user}/confirm?action=disable")).await.status, 409);
    assert_eq!(browser.post(&format!("{user}/disable"), &[("csrf", &csrf)]).await.status, 409);
    assert_eq!(browser.post(&format!("{user}/enable"), &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(browser.post(&format!("{user}/enable"), &[("csrf", &csrf)]).await.status, 409);
    let audited =
        |action: &str| format!("audit_events WHERE action = '{action}' AND actor = 'admin:{admin_id}'");
    assert_eq!(app.count(&audited("user.disable")).await, 1);
    assert_eq!(app.count(&audited("user.enable")).await, 1);
    assert_eq!(app.count("audit_events").await, events + 2, "only the two real changes were audited");

    // The admin's own account: neither offered nor confirmable.
    let own = format!("/admin/users/{admin_id}");
    let page = browser.get(&own).await;
    assert!(!page.body.contains("action=disable") && !page.body.contains("action=delete"));
    assert_eq!(browser.get(&format!("{own}/confirm?action=delete")).await.status, 400);

    // Rotating signing keys is confirmed first; the keys page has no one-click form for it.
    let keys = browser.get("/admin/keys").await;
    assert!(!keys.body.contains(r#"<form method="post" action="/admin/keys/rotate""#), "{}", keys.body);
    let before = app.count("signing_keys").await;
    let page = browser.get("/admin/keys/rotate").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains(r#"action="/admin/keys/rotate""#)
            && page.body.contains("Publish a new signing key now?")
    );
    assert_eq!(app.count("signing_keys").await, before, "the confirmation changes nothing");
    assert_eq!(browser.post("/admin/keys/rotate", &[("csrf", &csrf)]).await.status, 303);
    let page = browser.get("/admin/keys/rotate").await;
    assert!(page.body.contains("A rotation is already under way"), "{}", page.body);

    // Clients: made (Post/Redirect/Get, the secret once), disabled after a confirmation, and a
    // second disable is moot.
    let made = browser
        .post(
            "/admin/clients",
            &[("csrf", &csrf), ("client_id", "reports"), ("kind", "confidential"), ("scopes", "api")],
        )
        .await;
    // A second client made before the first's page is seen keeps its own secret.
    let other = browser
        .post(
            "/admin/clients",
            &[("csrf", &csrf), ("client_id", "billing"), ("kind", "confidential"), ("scopes", "api")],
        )
        .await;
    assert_eq!(other.status, 303);
    let created = follow_created(&mut browser, made).await;
    let billing = browser.get("/admin/clients/billing/created").await;
    assert!(billing.body.contains(r#"id="secret" readonly value=""#), "{}", billing.body);
    let secret =
        created.body.split(r#"id="secret" readonly value=""#).nth(1).unwrap().split('"').next().unwrap();
    let reload = browser.get("/admin/clients/reports/created").await;
    assert_eq!(reload.status, 200);
    assert!(!reload.body.contains(secret) && reload.body.contains("shown once"), "{}", reload.body);
    let list = browser.get("/admin/clients").await;
    assert!(!list.body.contains(r#"action="/admin/clients/reports/disable""#), "no one-click disable");
    assert!(list.body.contains("/admin/clients/reports/confirm?action=disable"));
    let page = browser.get("/admin/clients/reports/confirm?action=disable").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"action="/admin/clients/reports/disable""#));
    assert_eq!(browser.post("/admin/clients/reports/disable", &[("csrf", &csrf)]).await.status, 303);
    assert_eq!(browser.get("/admin/clients/reports/confirm?action=disable").await.status, 409);
    assert_eq!(browser.post("/admin/clients/reports/disable", &[("csrf", &csrf)]).await.status, 409);
    assert_eq!(app.count("audit_events WHERE action = 'client.disable'").await, 1);
    assert_eq!(browser.get("/admin/clients/app/confirm?action=disable").await.status, 400, "configured");
    assert_eq!(browser.get("/admin/clients/nothing/confirm?action=delete").await.status, 404);
}
both_backends!(confirmations_know_the_current_state);

/// The audit log shows who its ids are (and who was deleted), pages both ways with totals,
/// filters by date, and exports exactly what the filters select.
async fn the_audit_log_names_people_pages_both_ways_and_exports_its_selection(backend: Backend) {
    let app = dev_app(backend).await;
    let token =
        app.google.id_token(json!({"sub": "zed-sub", "name": "Zed Example", "email": "zed@example.com"}));
    let zed = Tokens::from_answer(&app.exchange(&token, &[]).await, "zed-sub");
    for _ in 0..59 {
        app.sign_in_as("zed-sub").await;
    }
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let user_log = format!("/admin/audit?user={}&action=sign_in", zed.user_id);

    let first = browser.get(&user_log).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("Events 1–50 of 60"), "{}", first.body);
    assert!(
        first.body.contains("Zed Example") && first.body.contains("zed@example.com"),
        "named beside the id"
    );
    assert!(!first.body.contains(r#"id="newer""#) && !first.body.contains(r#"id="newest""#));
    let older = between(&first.body, r#"<a class="button" href=""#, r#"" id="older""#).replace("&#38;", "&");
    let second = browser.get(&older).await;
    assert!(second.body.contains("Events 51–60 of 60"), "{}", second.body);
    assert!(!second.body.contains(r#"id="older""#));
    let newer = between(&second.body, r#"href=""#, r#"" id="newer""#);
    let newer = newer.rsplit('"').next().unwrap().replace("&#38;", "&");
    assert!(browser.get(&newer).await.body.contains("Events 1–50 of 60"));

    // Dates: today holds all of them, tomorrow none.
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_string();
    let tomorrow = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(86_400),
    )
    .to_string()[..10]
        .to_string();
    assert!(browser.get(&format!("{user_log}&since={today}&until={today}")).await.body.contains("of 60"));
    assert!(browser.get(&format!("{user_log}&since={tomorrow}")).await.body.contains("No events match"));
    assert_eq!(browser.get(&format!("{user_log}&since=yesterday")).await.status, 400);
    // A link past the oldest event (an old link, retention) shows the first page.
    let past = browser.get(&format!("{user_log}&before=0.0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80")).await;
    assert!(past.body.contains("Events 1–50 of 60"), "{}", past.body);

    // The export holds exactly the selection, oldest first.
    let csv =
        browser.get(&format!("{user_log}&format=csv").replace("/admin/audit?", "/admin/audit/export?")).await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert!(csv.headers["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    let rows: Vec<&str> = csv.body.lines().collect();
    assert_eq!(rows[0], "id,at,action,actor,user_id,device_id,ip,user_agent,detail,hash");
    assert_eq!(rows.len(), 61, "a header and 60 events");
    assert!(rows[1..].iter().all(|r| r.contains(",sign_in,") && r.contains(&zed.user_id)));
    let jsonl =
        browser.get(&format!("/admin/audit/export?format=jsonl&user={}&action=sign_in", zed.user_id)).await;
    let lines: Vec<serde_json::Value> =
        jsonl.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 60);
    assert!(lines.windows(2).all(|w| w[0]["at"].as_str() <= w[1]["at"].as_str()), "oldest first");
    assert_eq!(browser.get("/admin/audit/export?format=xml").await.status, 400);

    // Deleted: the log says so instead of linking to a page that is gone.
    let csrf = csrf_of(&browser.get(&format!("/admin/users/{}", zed.user_id)).await);
    browser.post(&format!("/admin/users/{}/delete", zed.user_id), &[("csrf", &csrf)]).await;
    let after = browser.get(&format!("/admin/audit?user={}", zed.user_id)).await;
    assert!(after.body.contains(r#"<span class="tag bad">deleted</span>"#), "{}", after.body);
    assert!(!after.body.contains(&format!(r#"href="/admin/users/{}""#, zed.user_id)));
    assert!(!after.body.contains("Zed Example"), "their name is gone with their keys");
}
both_backends!(the_audit_log_names_people_pages_both_ways_and_exports_its_selection);

/// The text between `before` and the next `after` in `text`.
#[track_caller]
fn between(text: &str, before: &str, after: &str) -> String {
    let end = text.find(after).unwrap_or_else(|| panic!("`{after}` not in:\n{text}"));
    let start =
        text[..end].rfind(before).unwrap_or_else(|| panic!("`{before}` not before `{after}`")) + before.len();
    text[start..end].to_string()
}

/// An ended device says when, by whom and why; a reuse names the replay's address and agent.
async fn a_devices_end_is_explained(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.dev = true;
        c.refresh_reuse_grace = "0s".into();
    })
    .await;
    let stolen = app.sign_in_as("ivy-sub").await;
    let revoked = app.sign_in_as("ivy-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    app.refresh(&stolen.refresh_token).await.assert_status(200);
    let replay = app.client.post(app.url("/oauth/token")).header("user-agent", "thief-bot/6.6").form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", stolen.refresh_token.as_str()),
        ("client_id", "app"),
    ]);
    Answer::read(replay.send().await.unwrap()).await.assert_oauth_error(400, "invalid_grant");
    let user = format!("/admin/users/{}", stolen.user_id);
    let csrf = csrf_of(&browser.get(&user).await);
    browser.post(&format!("{user}/devices/{}/revoke", revoked.device_id), &[("csrf", &csrf)]).await;

    let page = browser.get(&user).await;
    let row = |device: &str| {
        let start = page.body.find(&format!(r#"id="device-{device}""#)).expect("the device's row");
        let end = page.body[start..].find("</tr>").unwrap() + start;
        page.body[start..end].to_string()
    };
    let theft = row(&stolen.device_id);
    assert!(theft.contains("a refresh token already spent was presented again"), "{theft}");
    assert!(theft.contains("thief-bot/6.6") && theft.contains("127.0.0.1"), "{theft}");
    assert!(theft.contains("by client app"), "{theft}");
    let by_admin = row(&revoked.device_id);
    assert!(by_admin.contains("by admin ada: revoked (by the admin console)"), "{by_admin}");
}
both_backends!(a_devices_end_is_explained);
