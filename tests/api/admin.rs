//! The admin console (`/admin`) over HTTP, on both backends: sign-in through the browser flow
//! with the dev provider, the session cookie, the 403s, CSRF refusals, headers, escaping, and
//! every action with its effect checked through the API.

use serde_json::json;

use crate::support::*;

/// Signs `name` in to the console through `/admin/login`, the dev provider's form and
/// `/admin/callback`; returns the browser and the callback's answer.
async fn console_sign_in<'a>(app: &'a TestApp, name: &str) -> (Browser<'a>, Visit) {
    let mut browser = Browser::new(app);
    let answer = sign_in_from(&mut browser, "/admin/login", name).await;
    (browser, answer)
}

/// Signs `name` in, starting at `start` (a console URL that leads to `/admin/login`).
async fn sign_in_from(browser: &mut Browser<'_>, start: &str, name: &str) -> Visit {
    let mut start = browser.get(start).await;
    if start.location.as_deref().is_some_and(|l| l.starts_with("/admin/login")) {
        start = browser.get(&start.location.clone().unwrap()).await;
    }
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location.expect("a redirect to /oauth/authorize");
    assert!(authorize.starts_with("/oauth/authorize?"), "{authorize}");
    let form = browser.get(&format!("{authorize}&provider=dev")).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let login = between(&form.body, r#"name="login" value=""#, "\"");
    let back = browser.post("/oauth/authorize/dev", &[("login", &login), ("name", name)]).await;
    let callback = back.location.expect("a redirect back to the console");
    assert!(callback.starts_with(&format!("{PUBLIC_URL}/admin/callback?")), "{callback}");
    browser.get(&callback).await
}

/// The text between `before` and the next `after` in `text`.
#[track_caller]
fn between(text: &str, before: &str, after: &str) -> String {
    let start = text.find(before).unwrap_or_else(|| panic!("`{before}` not in:\n{text}")) + before.len();
    let len = text[start..].find(after).expect("closing text");
    text[start..start + len].to_string()
}

/// The user `name`'s sign-in to the dev app makes (the console makes none): their id.
pub async fn app_user(app: &TestApp, name: &str) -> String {
    let id_token = app.post_form("/dev/id-token", Auth::Anonymous, &[("name", name)]).await;
    let signed_in = app.exchange_as(Auth::Public("dev-app"), id_token.str("id_token"), &[]).await;
    Tokens::from_answer(&signed_in, name).user_id
}

/// An admin signed in to the console: `name` signs in to the dev app (which makes their user),
/// `idbridge admins grant` gives them the role, and a console visit opens a session.
pub async fn signed_in_admin<'a>(app: &'a TestApp, name: &str) -> (Browser<'a>, String) {
    let user_id = app_user(app, name).await;
    let out = app.run_cli(&["admins", "grant", &user_id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (browser, visit) = console_sign_in(app, name).await;
    assert_eq!(visit.status, 200, "{}", visit.body);
    (browser, user_id)
}

/// The page a new client's form leads to (Post/Redirect/Get): the redirect, followed.
pub async fn follow_created(browser: &mut Browser<'_>, made: Visit) -> Visit {
    assert_eq!(made.status, 303, "{}", made.body);
    let location = made.location.expect("a redirect to the new client's page");
    assert!(location.starts_with("/admin/clients/") && location.ends_with("/created"), "{location}");
    let page = browser.get(&location).await;
    assert_eq!(page.status, 200, "{}", page.body);
    page
}

/// The anti-CSRF token of a page's forms.
pub fn csrf_of(page: &Visit) -> String {
    between(&page.body, r#"name="csrf" value=""#, "\"")
}

pub async fn dev_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.dev = true).await
}

async fn a_non_admin_is_refused_and_keeps_no_session(backend: Backend) {
    let app = dev_app(backend).await;
    let mallory = app_user(&app, "mallory").await;
    let (mut browser, visit) = console_sign_in(&app, "mallory").await;

    assert_eq!(visit.status, 403);
    assert!(visit.body.contains("does not have the admin role"), "{}", visit.body);
    assert_eq!(between(&visit.body, "<code>", "</code>"), mallory, "the page names the user id to grant");
    assert!(!browser.cookies.contains_key("__Host-idbridge-admin"), "{:?}", visit.set_cookies);
    assert_eq!(app.count("admin_sessions").await, 0);
    assert_eq!(app.count("devices").await, 1, "the refused sign-in's device is gone; the app's stays");
    assert_eq!(app.count("audit_events WHERE action = 'admin.refused'").await, 1);
    assert_eq!(browser.get("/admin").await.location.as_deref(), Some("/admin/login"));
}
both_backends!(a_non_admin_is_refused_and_keeps_no_session);

/// Someone who never signed in to an app opens the console: refused, and no user, identity,
/// device or key is made (only the refusal is audited).
async fn opening_the_console_makes_no_user(backend: Backend) {
    let app = dev_app(backend).await;
    let (_, visit) = console_sign_in(&app, "stranger").await;

    assert_eq!(visit.status, 403, "{}", visit.body);
    assert!(visit.body.contains("has no user here, and none was made"), "{}", visit.body);
    assert!(visit.body.contains(r#"href="/admin/login""#), "offers to sign in as someone else");
    for table in ["users", "identities", "devices", "user_keys", "admin_sessions"] {
        assert_eq!(app.count(table).await, 0, "{table}");
    }
    assert_eq!(app.count("audit_events WHERE action = 'admin.refused' AND user_id IS NULL").await, 1);
}
both_backends!(opening_the_console_makes_no_user);

async fn an_admin_gets_a_host_cookie_and_the_overview(backend: Backend) {
    let app = dev_app(backend).await;
    let user_id = app_user(&app, "ada").await;
    assert!(app.run_cli(&["admins", "grant", &user_id]).await.status.success());
    let (mut browser, visit) = console_sign_in(&app, "ada").await;

    assert_eq!(visit.status, 200, "{}", visit.body);
    let cookie =
        visit.set_cookies.iter().find(|c| c.starts_with("__Host-idbridge-admin=")).expect("session cookie");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    // The callback answers with a page that moves on to /admin (a same-site navigation).
    assert!(visit.body.contains(r#"http-equiv="refresh" content="0;url=/admin""#));

    let overview = browser.get("/admin").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert_eq!(between(&overview.body, r#"id="count-users">"#, "<"), "1");
    assert_eq!(between(&overview.body, r#"id="count-devices">"#, "<"), "2", "the app's and the console's");
    assert_eq!(between(&overview.body, r#"id="count-signins">"#, "<"), "2", "the app's sign-in and this one");
    assert!(overview.body.contains("<svg") && overview.body.contains("Sign-ins per day"));
    assert_eq!(app.count(&format!("admin_sessions WHERE user_id = '{user_id}'")).await, 1);
    assert_eq!(
        app.count(&format!("audit_events WHERE action = 'admin.sign_in' AND actor = 'admin:{user_id}'"))
            .await,
        1
    );
}
both_backends!(an_admin_gets_a_host_cookie_and_the_overview);

async fn signed_out_visitors_are_sent_to_sign_in_and_changes_are_refused(backend: Backend) {
    let app = dev_app(backend).await;
    let bob = app.sign_in_as("bob-sub").await;
    let mut browser = Browser::new(&app);

    for page in ["/admin", "/admin/users", "/admin/audit", "/admin/keys", "/admin/clients"] {
        let visit = browser.get(page).await;
        let login = match page {
            "/admin" => "/admin/login".to_string(),
            other => format!("/admin/login?next={}", other.replace('/', "%2F")),
        };
        assert_eq!((visit.status, visit.location.as_deref()), (303, Some(login.as_str())), "{page}");
    }
    let path = format!("/admin/users/{}/devices/{}/revoke", bob.user_id, bob.device_id);
    let visit = browser.post(&path, &[("csrf", "anything")]).await;
    assert_eq!(visit.status, 403);
    // A forged session cookie is no session.
    browser.cookies.insert("__Host-idbridge-admin".into(), "A".repeat(43));
    assert_eq!(browser.post(&path, &[("csrf", "anything")]).await.status, 403);
    assert_eq!(browser.get("/admin").await.status, 303);
    app.refresh(&bob.refresh_token).await.assert_status(200);
}
both_backends!(signed_out_visitors_are_sent_to_sign_in_and_changes_are_refused);

async fn every_admin_page_carries_the_security_headers(backend: Backend) {
    let app = dev_app(backend).await;
    let bob = app.sign_in_as("bob-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;

    let pages = [
        "/admin".to_string(),
        "/admin/users".into(),
        format!("/admin/users/{}", bob.user_id),
        format!("/admin/users/{}/confirm?action=revoke-all", bob.user_id),
        "/admin/audit".into(),
        "/admin/keys".into(),
        "/admin/clients".into(),
        "/admin/login".into(),
        "/admin/users/not-a-user".into(),
    ];
    for page in &pages {
        let visit = browser.get(page).await;
        let header = |name: &str| visit.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        let csp = header("content-security-policy").unwrap_or_else(|| panic!("no CSP on {page}"));
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{page}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{page}: {csp}");
        assert_eq!(header("x-content-type-options").as_deref(), Some("nosniff"), "{page}");
        assert_eq!(header("referrer-policy").as_deref(), Some("same-origin"), "{page}");
        assert_eq!(header("cache-control").as_deref(), Some("no-store"), "{page}");
    }
    // The stylesheet is served by idbridge itself; pages load nothing from elsewhere.
    let css = browser.get("/admin/static/admin.css").await;
    assert_eq!(css.status, 200);
    assert!(css.headers["content-type"].to_str().unwrap().starts_with("text/css"));
    let overview = browser.get("/admin").await;
    assert!(!overview.body.contains("http://") && !overview.body.contains("https://"), "{}", overview.body);
    assert!(!overview.body.contains("<script"), "no script is needed");
}
both_backends!(every_admin_page_carries_the_security_headers);

async fn users_are_listed_newest_first_and_found_by_email_subject_and_id(backend: Backend) {
    let app = dev_app(backend).await;
    let carol =
        app.google.id_token(json!({"sub": "carol-sub", "email": "Carol@Example.com", "name": "Carol"}));
    let carol = Tokens::from_answer(&app.exchange(&carol, &[]).await, "carol-sub");
    let dave = app.google.id_token(json!({"sub": "dave-sub", "email": "dave@example.com", "name": "Dave"}));
    let dave = Tokens::from_answer(&app.exchange(&dave, &[]).await, "dave-sub");
    let (mut browser, _) = signed_in_admin(&app, "ada").await;

    let list = browser.get("/admin/users").await;
    assert_eq!(list.status, 200);
    let (ada_at, dave_at, carol_at) = (
        list.body.find(">ada<").unwrap(),
        list.body.find(">Dave<").unwrap(),
        list.body.find(">Carol<").unwrap(),
    );
    assert!(ada_at < dave_at && dave_at < carol_at, "newest first");

    let by_email = browser.get("/admin/users?q=carol%40example.com").await;
    assert!(
        by_email.body.contains(&carol.user_id) && !by_email.body.contains(&dave.user_id),
        "{}",
        by_email.body
    );
    assert!(by_email.body.contains("1 found"));
    let by_subject = browser.get("/admin/users?q=dave-sub").await;
    assert!(by_subject.body.contains(&dave.user_id) && !by_subject.body.contains(&carol.user_id));
    let by_id = browser.get(&format!("/admin/users?q={}", carol.user_id)).await;
    assert!(by_id.body.contains(&carol.user_id) && !by_id.body.contains(&dave.user_id));
    let nothing = browser.get("/admin/users?q=nobody%40example.com").await;
    assert!(nothing.body.contains("0 found") && !nothing.body.contains(&carol.user_id));
    // The start of an e-mail finds its user (`admin_daily` tests prefixes in full).
    let partial = browser.get("/admin/users?q=carol%40example").await;
    assert!(partial.body.contains(&carol.user_id) && !partial.body.contains(&dave.user_id));
}
both_backends!(users_are_listed_newest_first_and_found_by_email_subject_and_id);

async fn the_user_page_shows_identities_devices_and_events_but_no_secrets(backend: Backend) {
    let app = dev_app(backend).await;
    let token = app.google.id_token(json!({"sub": "erin-sub", "email": "erin@example.com", "name": "Erin"}));
    let erin = Tokens::from_answer(
        &app.exchange(&token, &[("device_name", "Erin Pixel 8"), ("device_platform", "android")]).await,
        "erin-sub",
    );
    let (mut browser, _) = signed_in_admin(&app, "ada").await;

    let page = browser.get(&format!("/admin/users/{}", erin.user_id)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for shown in [
        "Erin",
        "erin@example.com",
        "google",
        "erin-sub",
        "Erin Pixel 8",
        "android",
        "app",
        "127.0.0.1",
        "sign_in",
    ] {
        assert!(page.body.contains(shown), "`{shown}` missing:\n{}", page.body);
    }
    assert!(page.body.contains(&erin.device_id));
    for secret in [&erin.refresh_token, &erin.access_token] {
        assert!(!page.body.contains(secret.as_str()));
    }
    for hidden in ["$sha256$", "$argon2", "token_hash", "wrapped"] {
        assert!(!page.body.contains(hidden), "{hidden} shown");
    }
}
both_backends!(the_user_page_shows_identities_devices_and_events_but_no_secrets);

async fn revoking_one_device_kills_its_refresh_token_and_is_audited(backend: Backend) {
    let app = dev_app(backend).await;
    let phone = app.sign_in_as("frank-sub").await;
    let laptop = app.sign_in_as("frank-sub").await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;

    let confirm = browser
        .get(&format!(
            "/admin/users/{}/confirm?action=revoke-device&device={}",
            phone.user_id, phone.device_id
        ))
        .await;
    assert_eq!(confirm.status, 200, "{}", confirm.body);
    let action = format!(
        "/admin/users/{}",
        between(&confirm.body, r#"<form method="post" action="/admin/users/"#, "\"")
    );
    assert_eq!(action, format!("/admin/users/{}/devices/{}/revoke", phone.user_id, phone.device_id));
    let done = browser.post(&action, &[("csrf", &csrf_of(&confirm))]).await;
    assert_eq!(done.status, 303);
    assert_eq!(done.location, Some(format!("/admin/users/{}?done=device-revoked", phone.user_id)));

    app.refresh(&phone.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    app.get_me(&phone.access_token).await.assert_status(401);
    app.refresh(&laptop.refresh_token).await.assert_status(200);
    let audited = format!(
        "audit_events WHERE action = 'device.revoke' AND actor = 'admin:{admin_id}' AND device_id = '{}'",
        phone.device_id
    );
    assert_eq!(app.count(&audited).await, 1);
    let page = browser.get(&format!("/admin/users/{}?done=device-revoked", phone.user_id)).await;
    assert!(page.body.contains("The device was revoked"));
}
both_backends!(revoking_one_device_kills_its_refresh_token_and_is_audited);

async fn a_missing_or_wrong_csrf_token_is_403_and_changes_nothing(backend: Backend) {
    let app = dev_app(backend).await;
    let grace = app.sign_in_as("grace-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let page = browser.get("/admin/clients").await;
    let good = csrf_of(&page);
    let events = app.count("audit_events").await;

    let revoke = format!("/admin/users/{}/devices/{}/revoke", grace.user_id, grace.device_id);
    let disable = format!("/admin/users/{}/disable", grace.user_id);
    let posts: [(&str, Vec<(&str, &str)>); 6] = [
        (&revoke, vec![]),
        (&revoke, vec![("csrf", "forged")]),
        (&disable, vec![("csrf", &good[..good.len() - 1])]),
        ("/admin/keys/rotate", vec![]),
        ("/admin/clients", vec![("client_id", "sneaky"), ("scopes", "api"), ("kind", "confidential")]),
        ("/admin/logout", vec![("csrf", "")]),
    ];
    for (path, form) in &posts {
        let visit = browser.post(path, form).await;
        assert_eq!(visit.status, 403, "{path} {form:?}: {}", visit.body);
        assert!(visit.body.contains("Nothing was changed"), "{}", visit.body);
    }
    assert_eq!(app.count("audit_events").await, events);
    assert_eq!(app.count("clients").await, 0);
    assert_eq!(app.count("signing_keys").await, 1);
    app.refresh(&grace.refresh_token).await.assert_status(200);
    assert_eq!(browser.get("/admin").await.status, 200, "still signed in");
}
both_backends!(a_missing_or_wrong_csrf_token_is_403_and_changes_nothing);

async fn revoke_all_disable_enable_and_delete_take_effect_at_once(backend: Backend) {
    let app = dev_app(backend).await;
    let one = app.sign_in_as("henry-sub").await;
    let two = app.sign_in_as("henry-sub").await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    let user = format!("/admin/users/{}", one.user_id);
    let csrf = csrf_of(&browser.get(&user).await);

    let done = browser.post(&format!("{user}/revoke-all"), &[("csrf", &csrf)]).await;
    assert_eq!(done.location, Some(format!("{user}?done=all-revoked")));
    app.refresh(&one.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    app.refresh(&two.refresh_token).await.assert_oauth_error(400, "invalid_grant");

    let three = app.sign_in_as("henry-sub").await;
    let done = browser.post(&format!("{user}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(done.location, Some(format!("{user}?done=disabled")));
    app.get_me(&three.access_token).await.assert_status(401);
    let refused = app.exchange(&app.google.id_token_for("henry-sub"), &[]).await;
    assert_eq!(refused.status.as_u16(), 400, "a disabled user cannot sign in");
    assert!(browser.get(&user).await.body.contains("disabled"));

    let done = browser.post(&format!("{user}/enable"), &[("csrf", &csrf)]).await;
    assert_eq!(done.location, Some(format!("{user}?done=enabled")));
    let four = app.sign_in_as("henry-sub").await;
    app.get_me(&four.access_token).await.assert_status(200);

    let confirm = browser.get(&format!("{user}/confirm?action=delete")).await;
    assert!(confirm.body.contains("cannot be undone"));
    let done = browser.post(&format!("{user}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(done.location.as_deref(), Some("/admin/users?done=deleted"));
    app.get_me(&four.access_token).await.assert_status(401);
    assert_eq!(app.count(&format!("user_keys WHERE user_id = '{}'", one.user_id)).await, 0);
    assert_eq!(browser.get(&user).await.status, 404);

    for action in ["user.revoke_all", "user.disable", "user.enable", "user.delete"] {
        let audited = format!("audit_events WHERE action = '{action}' AND actor = 'admin:{admin_id}'");
        assert_eq!(app.count(&audited).await, 1, "{action}");
    }
    // An admin cannot lock themselves out from here.
    let own = browser.post(&format!("/admin/users/{admin_id}/disable"), &[("csrf", &csrf)]).await;
    assert_eq!(own.status, 400);
}
both_backends!(revoke_all_disable_enable_and_delete_take_effect_at_once);

async fn hostile_names_are_shown_as_text(backend: Backend) {
    let app = dev_app(backend).await;
    let hostile = "<script>alert(1)</script>";
    let token = app.google.id_token(
        json!({"sub": "<img src=x onerror=alert(2)>", "name": hostile, "email": "x\"><b>@example.com"}),
    );
    let user = Tokens::from_answer(&app.exchange(&token, &[("device_name", "<b>bold</b>")]).await, "x");
    let (mut browser, _) = signed_in_admin(&app, "ada").await;

    for page in [
        "/admin/users".to_string(),
        format!("/admin/users/{}", user.user_id),
        format!("/admin/users/{}/confirm?action=delete", user.user_id),
        format!("/admin/users?q={}", "%3Cimg%20src%3Dx%20onerror%3Dalert(2)%3E"),
        format!("/admin/audit?actor={}", "%3Cscript%3E"),
    ] {
        let visit = browser.get(&page).await;
        assert_eq!(visit.status, 200, "{page}");
        for raw in ["<script>", "<img src=x", "<b>bold", "\"><b>"] {
            assert!(!visit.body.contains(raw), "{page} shows `{raw}` unescaped");
        }
    }
    let user_page = browser.get(&format!("/admin/users/{}", user.user_id)).await;
    assert!(user_page.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", user_page.body);
}
both_backends!(hostile_names_are_shown_as_text);

async fn signing_out_ends_the_session_and_its_device(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let kept_cookie = browser.cookies["__Host-idbridge-admin"].clone();
    let csrf = csrf_of(&browser.get("/admin").await);

    let out = browser.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 200);
    assert!(out
        .set_cookies
        .iter()
        .any(|c| c.starts_with("__Host-idbridge-admin=;") && c.contains("Max-Age=0")));
    assert_eq!(app.count("admin_sessions").await, 0);
    assert_eq!(app.count("devices WHERE revoked_at IS NULL AND client_id = 'idbridge-admin'").await, 0);
    // The old cookie, replayed, is no session.
    browser.cookies.insert("__Host-idbridge-admin".into(), kept_cookie);
    assert_eq!(browser.get("/admin").await.location.as_deref(), Some("/admin/login"));
}
both_backends!(signing_out_ends_the_session_and_its_device);

async fn taking_the_role_or_the_device_away_ends_the_session(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    assert!(app.run_cli(&["admins", "revoke", &admin_id]).await.status.success());
    assert_eq!(browser.get("/admin").await.status, 303, "the role was taken away");
    assert_eq!(app.count("admin_sessions").await, 0);

    assert!(app.run_cli(&["admins", "grant", &admin_id]).await.status.success());
    let (mut browser, _) = console_sign_in(&app, "ada").await;
    assert_eq!(browser.get("/admin").await.status, 200);
    assert!(app.run_cli(&["users", "revoke-all", &admin_id]).await.status.success());
    assert_eq!(browser.get("/admin").await.status, 303, "the session's device was revoked");

    let (mut browser, _) = console_sign_in(&app, "ada").await;
    assert!(app.run_cli(&["users", "disable", &admin_id]).await.status.success());
    assert_eq!(browser.get("/admin").await.status, 303, "the admin was disabled");
}
both_backends!(taking_the_role_or_the_device_away_ends_the_session);

async fn sessions_end_when_idle_and_at_their_maximum(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    assert_eq!(browser.get("/admin").await.status, 200);
    let now = fake_google::now();

    // The default idle time is 30 minutes.
    app.execute_sql(&format!("UPDATE admin_sessions SET last_seen_at = {}", now - 31 * 60)).await;
    assert_eq!(browser.get("/admin").await.status, 303);

    let (mut browser, _) = console_sign_in(&app, "ada").await;
    assert_eq!(browser.get("/admin").await.status, 200);
    app.execute_sql(&format!("UPDATE admin_sessions SET last_seen_at = {now}, expires_at = {}", now - 1))
        .await;
    assert_eq!(browser.get("/admin").await.status, 303, "past the hard maximum");
}
both_backends!(sessions_end_when_idle_and_at_their_maximum);

async fn the_audit_log_filters_by_user_actor_and_action(backend: Backend) {
    let app = dev_app(backend).await;
    let ivy = app.sign_in_as("ivy-sub").await;
    let jack = app.sign_in_as("jack-sub").await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin").await);
    browser.post(&format!("/admin/users/{}/revoke-all", ivy.user_id), &[("csrf", &csrf)]).await;

    let all = browser.get("/admin/audit").await;
    assert!(all.body.contains(&ivy.user_id) && all.body.contains(&jack.user_id));
    let revoked_row = all.body.find(">user.revoke_all</td>").expect("the admin's change is listed");
    assert!(revoked_row < all.body.find(&format!("user:{}", jack.user_id)).unwrap(), "newest first");

    let by_user = browser.get(&format!("/admin/audit?user={}", jack.user_id)).await;
    assert!(by_user.body.contains(&jack.user_id) && !by_user.body.contains(&ivy.user_id));
    let by_actor = browser.get(&format!("/admin/audit?actor=admin:{admin_id}")).await;
    assert!(by_actor.body.contains(">user.revoke_all</td>") && !by_actor.body.contains(&jack.user_id));
    let by_action = browser.get("/admin/audit?action=sign_in").await;
    assert!(by_action.body.contains(&jack.user_id) && !by_action.body.contains("user.revoke_all</td>"));
    assert_eq!(browser.get("/admin/audit?before=nonsense").await.status, 400);
    // The actor filter is a prefix, and the user filter takes any case.
    let by_admins = browser.get("/admin/audit?actor=admin").await;
    assert!(by_admins.body.contains(">user.revoke_all</td>") && !by_admins.body.contains(&jack.user_id));
    let by_upper = browser.get(&format!("/admin/audit?user={}", jack.user_id.to_uppercase())).await;
    assert!(by_upper.body.contains(&jack.user_id) && !by_upper.body.contains(&ivy.user_id));
}
both_backends!(the_audit_log_filters_by_user_actor_and_action);

/// The audit page says whether the hash chain verifies, and says so when a row was altered.
async fn the_audit_page_shows_whether_the_chain_verifies(backend: Backend) {
    let app = dev_app(backend).await;
    app.sign_in_as("kim-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    assert!(app.run_cli(&["audit", "verify"]).await.status.success());

    let intact = browser.get("/admin/audit").await;
    app.execute_sql("UPDATE audit_events SET detail = 'edited' WHERE seq = 1").await;
    let broken = browser.get("/admin/audit").await;

    assert!(intact.body.contains("The hash chain verifies up to event"), "{}", intact.body);
    assert!(broken.body.contains("The hash chain is broken"), "{}", broken.body);
    assert!(broken.body.contains("(number 1) was altered"), "{}", broken.body);
}
both_backends!(the_audit_page_shows_whether_the_chain_verifies);

/// A page asked for before signing in is where the sign-in lands; a page elsewhere is not.
async fn sign_in_comes_back_to_the_page_asked_for(backend: Backend) {
    let app = dev_app(backend).await;
    let (_, ada) = signed_in_admin(&app, "ada").await;
    let page = format!("/admin/users/{ada}?done=enabled");

    let mut browser = Browser::new(&app);
    let asked = browser.get(&page).await;
    let landed = sign_in_from(&mut browser, &page, "ada").await;
    let mut other = Browser::new(&app);
    let elsewhere = sign_in_from(&mut other, "/admin/login?next=https://evil.example/admin", "ada").await;

    assert_eq!(asked.status, 303);
    let next: String = url::form_urlencoded::byte_serialize(page.as_bytes()).collect();
    assert_eq!(asked.location.as_deref(), Some(format!("/admin/login?next={next}").as_str()));
    assert_eq!(landed.status, 200, "{}", landed.body);
    let escaped = page.replace('&', "&amp;");
    assert!(landed.body.contains(&format!("url={escaped}\"")), "{}", landed.body);
    assert_eq!(browser.get(&page).await.status, 200);
    assert!(elsewhere.body.contains("url=/admin\""), "{}", elsewhere.body);
}
both_backends!(sign_in_comes_back_to_the_page_asked_for);

/// A link from another site reaches the page with the session's Lax read cookie, without a
/// new sign-in; a change needs the Strict cookie, so a cross-site request changes nothing.
async fn a_link_from_another_site_reads_but_never_changes(backend: Backend) {
    let app = dev_app(backend).await;
    let kim = app.sign_in_as("kim-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin").await);
    let sessions_before = app.count("admin_sessions").await;

    let page = browser.cross_site_get(&format!("/admin/users/{}", kim.user_id)).await;
    let read_only = browser.cookies.iter().filter(|(name, _)| name.ends_with("-read"));
    let read_cookie: Vec<String> = read_only.map(|(k, v)| format!("{k}={v}")).collect();
    let change = app
        .client
        .post(app.url(&format!("/admin/users/{}/revoke-all", kim.user_id)))
        .header("cookie", read_cookie.join("; "))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();

    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&kim.user_id));
    assert_eq!(app.count("admin_sessions").await, sessions_before, "no second session");
    assert_eq!(read_cookie.len(), 1, "{:?}", browser.cookie_lines);
    assert!(browser.cookie_lines["__Host-idbridge-admin-read"].contains("SameSite=Lax"));
    assert!(browser.cookie_lines["__Host-idbridge-admin"].contains("SameSite=Strict"));
    assert_eq!(change.status().as_u16(), 403, "a change with the read cookie alone");
    app.get_me(&kim.access_token).await.assert_status(200);
}
both_backends!(a_link_from_another_site_reads_but_never_changes);

async fn the_audit_log_pages_through_older_events(backend: Backend) {
    let app = dev_app(backend).await;
    for _ in 0..55 {
        app.sign_in_as("kim-sub").await;
    }
    let (mut browser, _) = signed_in_admin(&app, "ada").await;

    let first = browser.get("/admin/audit?action=sign_in").await;
    let next =
        between(&first.body, r#"<a class="button" href=""#, "\"").replace("&#38;", "&").replace("&amp;", "&");
    assert!(next.starts_with("/admin/audit?action=sign_in&before="), "{next}");
    let second = browser.get(&next).await;
    let rows = |v: &Visit| v.body.matches("<td data-label=\"Action\">sign_in</td>").count();
    assert_eq!(rows(&first), 50);
    assert_eq!(rows(&second), 55 + 2 - 50, "the rest, the admin's two sign-ins included");
    assert!(!second.body.contains("Older events"));
}
both_backends!(the_audit_log_pages_through_older_events);

async fn rotating_the_signing_key_publishes_a_new_key_first(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    let before = browser.get("/admin/keys").await;
    assert_eq!(before.body.matches("state-signing").count(), 1);
    let old_kid = between(&before.body, "<td data-label=\"kid\"><code>", "</code>");

    let done = browser.post("/admin/keys/rotate", &[("csrf", &csrf_of(&before))]).await;
    assert_eq!(done.location.as_deref(), Some("/admin/keys?done=key-added"));
    let after = browser.get("/admin/keys?done=key-added").await;
    assert!(after.body.contains("state-published") && after.body.contains("ES256"), "{}", after.body);
    let jwks = app.get("/.well-known/jwks.json").await;
    assert_eq!(jwks.body["keys"].as_array().unwrap().len(), 2, "published ahead of signing");
    // Tokens are still signed by the old key until the new one's time comes.
    let tokens = app.sign_in().await;
    assert_eq!(jwt_header(&tokens.access_token)["kid"], old_kid.as_str());
    assert_eq!(
        app.count(&format!(
            "audit_events WHERE action = 'signing_key.rotate' AND actor = 'admin:{admin_id}'"
        ))
        .await,
        1
    );
}
both_backends!(rotating_the_signing_key_publishes_a_new_key_first);

/// The command line rotates through the same use case as the console, so it is audited too
/// (naming the command line and the new key), as granting the admin role is.
async fn the_command_line_is_audited_like_the_console(backend: Backend) {
    let app = dev_app(backend).await;
    let out = app.run_cli(&["keys", "rotate-signing"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let kid = between(&printed, "added signing key ", ";");
    assert_eq!(
        app.count(&format!(
            "audit_events WHERE action = 'signing_key.rotate' AND actor = 'cli' AND detail = 'kid={kid}'"
        ))
        .await,
        1,
        "{printed}"
    );
    let signed = app.sign_in().await;
    let out = app.run_cli(&["admins", "grant", &signed.user_id]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let granted = format!(
        "audit_events WHERE action = 'admin.grant' AND actor = 'cli' AND user_id = '{}'",
        signed.user_id
    );
    assert_eq!(app.count(&granted).await, 1);
}
both_backends!(the_command_line_is_audited_like_the_console);

async fn clients_made_in_the_console_work_at_oauth_like_configured_ones(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, admin_id) = signed_in_admin(&app, "ada").await;
    let page = browser.get("/admin/clients").await;
    assert!(
        page.body.contains("<code>svc</code>") && page.body.contains("<code>app</code>"),
        "configured ones shown"
    );
    let csrf = csrf_of(&page);

    let made = browser
        .post(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "reports"),
                ("kind", "confidential"),
                ("redirect_uris", ""),
                ("scopes", "api"),
            ],
        )
        .await;
    let made = follow_created(&mut browser, made).await;
    let secret = between(&made.body, r#"id="secret" readonly value=""#, "\"");
    assert!(secret.len() >= 43);
    // Stored like a configured client's secret: a SHA-256 digest, never the secret.
    assert_eq!(app.count("clients WHERE client_id = 'reports' AND secret_hash LIKE '$sha256$%'").await, 1);
    assert!(!browser.get("/admin/clients").await.body.contains(&secret), "shown once");

    let token = app.google.id_token_for("lee-sub");
    let lee = app.exchange_as(Auth::Basic("reports", &secret), &token, &[]).await;
    let lee = Tokens::from_answer(&lee, "lee-sub");
    let wrong =
        app.exchange_as(Auth::Basic("reports", "wrong"), &app.google.id_token_for("lee-sub"), &[]).await;
    wrong.assert_oauth_error(401, "invalid_client");

    let public = browser
        .post(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "web-app"),
                ("kind", "public"),
                ("redirect_uris", "https://web.example/cb\ncom.example.web:/cb"),
                ("scopes", "openid api"),
            ],
        )
        .await;
    let public = follow_created(&mut browser, public).await;
    assert!(public.body.contains("A public client has no secret"), "{}", public.body);
    let authorize = format!(
        "/oauth/authorize?response_type=code&client_id=web-app&redirect_uri=https%3A%2F%2Fweb.example%2Fcb&code_challenge={}&code_challenge_method=S256&state=s",
        "a".repeat(43)
    );
    let chooser = browser.get(&authorize).await;
    assert_eq!(chooser.status, 200, "{}", chooser.body);
    assert!(chooser.body.contains("web-app"));

    let disabled = browser.post("/admin/clients/reports/disable", &[("csrf", &csrf)]).await;
    assert_eq!(disabled.location.as_deref(), Some("/admin/clients?done=client-disabled"));
    app.exchange_as(Auth::Basic("reports", &secret), &app.google.id_token_for("lee-sub"), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    browser.post("/admin/clients/reports/enable", &[("csrf", &csrf)]).await;
    app.exchange_as(Auth::Basic("reports", &secret), &app.google.id_token_for("lee-sub"), &[])
        .await
        .assert_status(200);
    let confirm = browser.get("/admin/clients/reports/confirm-delete").await;
    assert!(confirm.body.contains("/admin/clients/reports/delete"));
    browser.post("/admin/clients/reports/delete", &[("csrf", &csrf)]).await;
    app.exchange_as(Auth::Basic("reports", &secret), &app.google.id_token_for("lee-sub"), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    // Made again under the same id: a new secret, and nothing of the old client lives on.
    let again = browser
        .post(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "reports"),
                ("kind", "confidential"),
                ("redirect_uris", ""),
                ("scopes", "api"),
            ],
        )
        .await;
    let again = follow_created(&mut browser, again).await;
    let new_secret = between(&again.body, r#"id="secret" readonly value=""#, "\"");
    assert_ne!(new_secret, secret);
    app.exchange_as(Auth::Basic("reports", &secret), &app.google.id_token_for("lee-sub"), &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    app.refresh_as(Auth::Basic("reports", &new_secret), &lee.refresh_token)
        .await
        .assert_oauth_error(400, "invalid_grant");
    app.get_me(&lee.access_token).await.assert_status(401);

    for action in ["client.create", "client.disable", "client.enable", "client.delete"] {
        let audited = format!("audit_events WHERE action = '{action}' AND actor = 'admin:{admin_id}'");
        assert!(app.count(&audited).await >= 1, "{action}");
    }
}
both_backends!(clients_made_in_the_console_work_at_oauth_like_configured_ones);

async fn bad_clients_are_refused_and_nothing_is_stored(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin/clients").await);

    let cases: [(&str, &str, &str, &str, u16); 8] = [
        ("plain", "public", "http://web.example/cb", "api", 400),
        ("frag", "public", "https://web.example/cb#x", "api", 400),
        ("rel", "public", "/cb", "api", 400),
        ("js", "public", "javascript:alert(1)", "api", 400),
        ("none", "public", "", "api", 400),
        ("Bad Id", "confidential", "", "api", 400),
        ("svc", "confidential", "", "api", 409),
        ("noscope", "confidential", "", "", 400),
    ];
    for (id, kind, redirect, scopes, status) in cases {
        let visit = browser
            .post(
                "/admin/clients",
                &[
                    ("csrf", &csrf),
                    ("client_id", id),
                    ("kind", kind),
                    ("redirect_uris", redirect),
                    ("scopes", scopes),
                ],
            )
            .await;
        assert_eq!(visit.status, status, "{id}: {}", visit.body);
        assert!(visit.body.contains(r#"class="error""#), "{id}: the reason is shown");
    }
    assert_eq!(app.count("clients").await, 0);
    // Configured clients cannot be changed from the console.
    assert_eq!(browser.post("/admin/clients/svc/disable", &[("csrf", &csrf)]).await.status, 400);
    assert_eq!(browser.post("/admin/clients/ghost/delete", &[("csrf", &csrf)]).await.status, 404);
}
both_backends!(bad_clients_are_refused_and_nothing_is_stored);

async fn malformed_ids_and_links_get_clear_4xx_pages(backend: Backend) {
    let app = dev_app(backend).await;
    let bob = app.sign_in_as("bob-sub").await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin").await);

    let ghost = "00000000-0000-7000-8000-000000000000";
    for (path, status) in [
        ("/admin/users/not-a-uuid".to_string(), 404),
        (format!("/admin/users/{ghost}"), 404),
        (format!("/admin/users/{}/confirm?action=explode", bob.user_id), 400),
        (format!("/admin/users/{}/confirm?action=revoke-device&device=zzz", bob.user_id), 400),
        (format!("/admin/users/{}/confirm?action=revoke-device&device={ghost}", bob.user_id), 404),
        ("/admin/users?after=garbage".into(), 400),
        ("/admin/users?q=%00".into(), 400),
        (format!("/admin/users/{}", bob.user_id.replace('-', "").to_uppercase()), 200),
    ] {
        assert_eq!(browser.get(&path).await.status, status, "{path}");
    }
    let other_users_device = format!("/admin/users/{ghost}/devices/{}/revoke", bob.device_id);
    assert_eq!(browser.post(&other_users_device, &[("csrf", &csrf)]).await.status, 404);
    app.refresh(&bob.refresh_token).await.assert_status(200);
    let wrong_method = app.client.delete(app.url("/admin/users")).send().await.unwrap();
    assert_eq!(wrong_method.status().as_u16(), 405);
}
both_backends!(malformed_ids_and_links_get_clear_4xx_pages);

async fn the_console_client_cannot_be_used_at_the_token_endpoint(backend: Backend) {
    let app = dev_app(backend).await;
    let token = app.google.id_token_for("nina-sub");
    app.exchange_as(Auth::Public("idbridge-admin"), &token, &[])
        .await
        .assert_oauth_error(401, "invalid_client");
    let discovery = app.get("/.well-known/openid-configuration").await;
    assert!(!discovery.body.to_string().contains("idbridge-admin"));
}
both_backends!(the_console_client_cannot_be_used_at_the_token_endpoint);

/// Makes a confidential client in the console; returns its secret.
async fn console_client(browser: &mut Browser<'_>, csrf: &str, client_id: &str) -> String {
    let made = browser
        .post(
            "/admin/clients",
            &[
                ("csrf", csrf),
                ("client_id", client_id),
                ("kind", "confidential"),
                ("redirect_uris", ""),
                ("scopes", "api"),
            ],
        )
        .await;
    let made = follow_created(browser, made).await;
    between(&made.body, r#"id="secret" readonly value=""#, "\"")
}

/// A flood of wrong secrets for console-made clients from one address is refused with 429
/// once the address is over its rate, never 503, and no other client is locked out.
async fn a_wrong_secret_flood_against_console_clients_gets_429_and_locks_no_one_out(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.dev = true;
        c.per_ip_per_second = 20;
    })
    .await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin/clients").await);
    let mut secrets = Vec::new();
    for id in ["flood-a", "flood-b", "flood-c"] {
        secrets.push((id, console_client(&mut browser, &csrf, id).await));
    }

    let mut statuses = Vec::new();
    for round in 0..10 {
        let wrong = format!("wrong-{round}");
        let attempts = (0..30).map(|i| app.introspect_as(Auth::Basic(secrets[i % 3].0, &wrong), "x"));
        statuses.extend(futures_util::future::join_all(attempts).await.iter().map(|a| a.status.as_u16()));
    }

    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "only 401 and 429: {statuses:?}");
    assert!(statuses.contains(&429), "the flood was never limited: {statuses:?}");
    for (id, secret) in &secrets {
        let right = app.introspect_as(Auth::Basic(id, secret), "x").await;
        right.assert_status(200);
    }
}
both_backends!(a_wrong_secret_flood_against_console_clients_gets_429_and_locks_no_one_out);

/// A console client made when console secrets were stored as argon2 gets its secret stored
/// as SHA-256 at its first successful authentication, and verifies cheaply from then on.
async fn an_older_console_clients_argon2_secret_is_rehashed_at_its_next_login(backend: Backend) {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let app = dev_app(backend).await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin/clients").await);
    let secret = console_client(&mut browser, &csrf, "older").await;
    let salt = SaltString::encode_b64(b"older-client-salt").unwrap();
    let argon2 = argon2::Argon2::default().hash_password(secret.as_bytes(), &salt).unwrap().to_string();
    app.execute_sql(&format!("UPDATE clients SET secret_hash = '{argon2}' WHERE client_id = 'older'")).await;
    let restarted = app.restart_with(|_| {}).await;

    restarted.introspect_as(Auth::Basic("older", &secret), "x").await.assert_status(200);

    assert_eq!(
        restarted.count("clients WHERE client_id = 'older' AND secret_hash LIKE '$sha256$%'").await,
        1
    );
    restarted.introspect_as(Auth::Basic("older", &secret), "x").await.assert_status(200);
    restarted.introspect_as(Auth::Basic("older", "wrong"), "x").await.assert_status(401);
}
both_backends!(an_older_console_clients_argon2_secret_is_rehashed_at_its_next_login);

/// A console client made with "Require DPoP" refuses token requests without a proof.
async fn a_console_client_can_require_dpop(backend: Backend) {
    let app = dev_app(backend).await;
    let (mut browser, _) = signed_in_admin(&app, "ada").await;
    let csrf = csrf_of(&browser.get("/admin/clients").await);
    let made = browser
        .post(
            "/admin/clients",
            &[
                ("csrf", &csrf),
                ("client_id", "strict-svc"),
                ("kind", "confidential"),
                ("redirect_uris", ""),
                ("scopes", "api"),
                ("dpop_required", "on"),
            ],
        )
        .await;
    let made = follow_created(&mut browser, made).await;
    let secret = between(&made.body, r#"id="secret" readonly value=""#, "\"");
    assert_eq!(app.count("clients WHERE client_id = 'strict-svc' AND dpop_required").await, 1);

    let token = app.google.id_token_for("dpop-sub");
    let without = app.exchange_as(Auth::Basic("strict-svc", &secret), &token, &[]).await;

    without.assert_oauth_error(400, "invalid_dpop_proof");
    let key = crate::support::dpop::DpopKey::es256();
    let form =
        [("grant_type", TOKEN_EXCHANGE), ("subject_token", &token), ("subject_token_type", ID_TOKEN_TYPE)];
    let proof = key.proof("POST", &format!("{PUBLIC_URL}/oauth/token"), None);
    let with = app
        .post_form_with("/oauth/token", Auth::Basic("strict-svc", &secret), &form, &[("DPoP", &proof)])
        .await;
    with.assert_status(200);
    assert_eq!(with.body["token_type"], serde_json::json!("DPoP"));
}
both_backends!(a_console_client_can_require_dpop);
