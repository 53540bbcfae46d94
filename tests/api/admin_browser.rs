//! The admin console in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! through the fantoccini crate). An admin signs in through the dev provider, finds a user by
//! e-mail, revokes one of their devices (whose refresh token is then refused by the API), looks
//! at the pages at desktop and phone width, and signs out; a non-admin is refused. Screenshots
//! go to `target/admin-screenshots/`.
//!
//! `.ci/run` installs Debian's `chromium` and `chromium-driver` when they are missing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts chromedriver and waits for the line that says it listens.
fn start_driver() -> Driver {
    assert!(
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists(),
        "the browser tests need Debian's chromium and chromium-driver (.ci/run installs them)"
    );
    let port = free_port();
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let stdout = child.stdout.take().expect("chromedriver stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines.next().expect("chromedriver exited").expect("read chromedriver output");
        if line.contains("started successfully") {
            break;
        }
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Driver { child, url: format!("http://127.0.0.1:{port}") }
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with headless Chromium")
}

fn screenshot_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/admin-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn save_screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(name), png).expect("write screenshot");
}

/// Through the console's sign-in: the provider choice, the dev provider's form.
async fn sign_in_through_dev(client: &Client, app: &TestApp, name: &str) {
    client.goto(&app.url("/admin")).await.unwrap();
    through_dev_provider(client, name).await;
}

/// On the console's provider choice: the dev provider, its form filled in as `name`, sent.
async fn through_dev_provider(client: &Client, name: &str) {
    client
        .wait()
        .for_element(Locator::LinkText("Continue with the dev provider"))
        .await
        .expect("the provider choice")
        .click()
        .await
        .unwrap();
    let field = client.wait().for_element(Locator::Id("name")).await.expect("the dev provider's form");
    field.send_keys(name).await.unwrap();
    client.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
}

/// A user id from the dev provider's token for `name`.
async fn dev_user(app: &TestApp, name: &str) -> String {
    let id_token = app.post_form("/dev/id-token", Auth::Anonymous, &[("name", name)]).await;
    let signed_in = app.exchange_as(Auth::Public("dev-app"), id_token.str("id_token"), &[]).await;
    Tokens::from_answer(&signed_in, name).user_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_finds_a_user_by_email_and_revokes_their_phone_in_chromium() {
    let driver = start_driver();
    let app = app_at_its_own_address(Backend::Sqlite, true).await;
    let zoe_token =
        app.google.id_token(json!({"sub": "zoe-sub", "email": "zoe@example.com", "name": "Zoe Example"}));
    let phone = Tokens::from_answer(
        &app.exchange(&zoe_token, &[("device_name", "Zoe iPhone"), ("device_platform", "ios")]).await,
        "zoe-sub",
    );
    let tablet_token = app.google.id_token_for("zoe-sub");
    let tablet = Tokens::from_answer(
        &app.exchange(&tablet_token, &[("device_name", "Zoe iPad"), ("device_platform", "ios")]).await,
        "zoe-sub",
    );
    let root = dev_user(&app, "root").await;
    assert!(app.run_cli(&["admins", "grant", &root]).await.status.success());
    dev_user(&app, "mallory").await;

    let client = browser(&driver).await;

    // Sign in: /admin → the browser flow → back to the overview, with the __Host- cookie set
    // over plain http on loopback.
    sign_in_through_dev(&client, &app, "root").await;
    client.wait().for_element(Locator::Id("count-users")).await.expect("the overview after sign-in");
    assert_eq!(client.current_url().await.unwrap().path(), "/admin");
    let cookie = client.get_named_cookie("__Host-idbridge-admin").await.expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(client.find(Locator::Id("count-users")).await.unwrap().text().await.unwrap(), "3");
    assert!(client.find(Locator::Css("figure.chart svg rect.bar")).await.is_ok(), "the chart is drawn");
    save_screenshot(&client, "overview.png").await;

    // Find Zoe by e-mail and open her page.
    client.find(Locator::LinkText("Users")).await.unwrap().click().await.unwrap();
    let search = client.wait().for_element(Locator::Id("q")).await.unwrap();
    search.send_keys("zoe@example.com").await.unwrap();
    client.find(Locator::Css("form.search button")).await.unwrap().click().await.unwrap();
    let found = client.wait().for_element(Locator::XPath("//p[contains(., 'found for')]")).await.unwrap();
    assert!(found.text().await.unwrap().starts_with("1 found"));
    client.find(Locator::LinkText("Zoe Example")).await.unwrap().click().await.unwrap();
    let row = client.wait().for_element(Locator::Id(&format!("device-{}", phone.device_id))).await.unwrap();
    assert!(row.text().await.unwrap().contains("Zoe iPhone"));
    save_screenshot(&client, "user.png").await;

    // Revoke the phone, through the confirmation step.
    row.find(Locator::LinkText("Revoke")).await.unwrap().click().await.unwrap();
    let confirm = client.wait().for_element(Locator::Css("form.confirm button[type=submit]")).await.unwrap();
    assert!(client.source().await.unwrap().contains("Zoe iPhone"));
    confirm.click().await.unwrap();
    let notice = client.wait().for_element(Locator::Css("p.notice")).await.unwrap();
    assert!(notice.text().await.unwrap().contains("The device was revoked"));
    let row = client.find(Locator::Id(&format!("device-{}", phone.device_id))).await.unwrap();
    assert!(row.text().await.unwrap().contains("revoked"));

    app.refresh(&phone.refresh_token).await.assert_oauth_error(400, "invalid_grant");
    app.get_me(&phone.access_token).await.assert_status(401);
    app.refresh(&tablet.refresh_token).await.assert_status(200);

    // At a phone's width the page fits without sideways scrolling.
    client.set_window_size(390, 844).await.unwrap();
    let fits = client
        .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", vec![])
        .await
        .unwrap();
    assert_eq!(fits, json!(true), "the user page scrolls sideways at 390px");
    save_screenshot(&client, "user-phone.png").await;
    client.goto(&app.url("/admin")).await.unwrap();
    save_screenshot(&client, "overview-phone.png").await;
    client.set_window_size(1280, 1000).await.unwrap();

    // Sign out: the next visit starts a sign-in again.
    client.find(Locator::Css("form.signout button")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::XPath("//h1[text()='Signed out']")).await.unwrap();
    client.goto(&app.url("/admin")).await.unwrap();
    assert_eq!(client.current_url().await.unwrap().path(), "/oauth/authorize");
    assert_eq!(app.count("admin_sessions").await, 0);

    // A non-admin is refused with a clear page.
    client.delete_all_cookies().await.unwrap();
    sign_in_through_dev(&client, &app, "mallory").await;
    client.wait().for_element(Locator::XPath("//h1[text()='Not an admin']")).await.expect("the refusal page");
    assert!(client.source().await.unwrap().contains("does not have the admin role"));
    assert!(client.get_named_cookie("__Host-idbridge-admin").await.is_err());
    save_screenshot(&client, "not-an-admin.png").await;

    client.close().await.unwrap();
}

/// Hostile and very long values at a phone's width and at a desktop's: nothing scrolls
/// sideways, long names are cut with the whole value in the title, ids and dates stay on one
/// line on a desktop, and every page starts with a skip link. An admin is not offered to
/// disable or delete their own account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_values_fit_at_phone_and_desktop_widths_in_chromium() {
    let driver = start_driver();
    let app = app_at_its_own_address(Backend::Sqlite, true).await;
    let long_name =
        format!("<img src=x onerror=alert(1)> {}", "Wolfeschlegelsteinhausenbergerdorff ".repeat(6));
    let long_email = format!("{}@{}.example.com", "a".repeat(60), "very-long-subdomain-".repeat(8));
    let token = app.google.id_token(json!({"sub": "long-sub", "email": long_email, "name": long_name}));
    let long = Tokens::from_answer(
        &app.exchange(&token, &[("device_name", &"Phone ".repeat(16))]).await,
        "long-sub",
    );
    let root = dev_user(&app, "root").await;
    assert!(app.run_cli(&["admins", "grant", &root]).await.status.success());
    let client = browser(&driver).await;
    sign_in_through_dev(&client, &app, "root").await;
    client.wait().for_element(Locator::Id("count-users")).await.expect("the overview after sign-in");

    let fits = || async {
        client
            .execute("return document.documentElement.scrollWidth <= window.innerWidth + 1;", vec![])
            .await
            .unwrap()
    };
    for (width, height) in [(390, 844), (1280, 1000)] {
        client.set_window_size(width, height).await.unwrap();
        for page in ["/admin", "/admin/users", &format!("/admin/users/{}", long.user_id), "/admin/audit"] {
            client.goto(&app.url(page)).await.unwrap();
            client.wait().for_element(Locator::Css("main h1")).await.unwrap();
            assert_eq!(fits().await, json!(true), "{page} scrolls sideways at {width}px");
            let skip = client.find(Locator::Css("body > a.skip:first-child")).await.expect("a skip link");
            assert_eq!(skip.attr("href").await.unwrap().as_deref(), Some("#main"));
            let alerts =
                client.execute("return document.querySelectorAll('img').length;", vec![]).await.unwrap();
            assert_eq!(alerts, json!(0), "{page}: the name's markup was not escaped");
        }
        client.goto(&app.url("/admin/users")).await.unwrap();
        let name = client
            .wait()
            .for_element(Locator::XPath("//td/a[@class='clip' and starts-with(@title, '<img')]"))
            .await
            .expect("the long name, cut, with its whole value in the title");
        assert_eq!(name.attr("title").await.unwrap().as_deref(), Some(long_name.as_str()));
        save_screenshot(&client, &format!("long-values-users-{width}.png")).await;
        client.goto(&app.url(&format!("/admin/users/{}", long.user_id))).await.unwrap();
        client.wait().for_element(Locator::Css("main h1")).await.unwrap();
        save_screenshot(&client, &format!("long-values-user-{width}.png")).await;
    }
    // On a desktop a user id and a date take one line each.
    client.goto(&app.url("/admin/users")).await.unwrap();
    let one_line = client
        .execute(
            "const h = [...document.querySelectorAll('tbody td code, tbody td.nowrap')].map(e => e.getBoundingClientRect().height);\
             return h.length > 0 && Math.max(...h) < 2 * parseFloat(getComputedStyle(document.body).lineHeight);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(one_line, json!(true), "ids or dates wrap on a desktop");
    // Their own account: no disable or delete.
    client.goto(&app.url(&format!("/admin/users/{root}"))).await.unwrap();
    client.wait().for_element(Locator::Css("section.actions")).await.unwrap();
    let source = client.source().await.unwrap();
    assert!(
        !source.contains("action=delete") && !source.contains("action=disable"),
        "own account actions offered"
    );
    client.close().await.unwrap();
}

/// axe-core, installed by `.ci/run` (`tests/axe`, npm).
fn axe_source() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/axe/node_modules/axe-core/axe.min.js");
    std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("the accessibility check needs axe-core: run `npm ci` in tests/axe (.ci/run does) ({path:?})")
    })
}

/// Runs axe-core on the page shown and fails on any serious or critical violation.
async fn assert_accessible(client: &Client, axe: &str, what: &str) {
    client.execute(axe, vec![]).await.expect("load axe-core");
    let found = client
        .execute_async(
            "const done = arguments[arguments.length - 1];\
             axe.run(document, {resultTypes: ['violations']})\
               .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')\
                 .map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.html)}))))\
               .catch(e => done('axe failed: ' + e));",
            vec![],
        )
        .await
        .expect("run axe-core");
    assert_eq!(found, json!([]), "{what}: serious accessibility violations:\n{found:#}");
}

/// The rows' names of the users page as shown.
async fn listed_names(client: &Client) -> serde_json::Value {
    client
        .execute(
            "return [...document.querySelectorAll('tbody td[data-label=Name] a')].map(a => a.textContent);",
            vec![],
        )
        .await
        .unwrap()
}

/// Clicks the element `css` finds, then waits for `then`.
async fn click_then(client: &Client, css: &str, then: Locator<'_>) {
    client.find(Locator::Css(css)).await.unwrap_or_else(|_| panic!("{css}")).click().await.unwrap();
    client.wait().for_element(then).await.unwrap_or_else(|_| panic!("after clicking {css}"));
}

/// A day of daily use in Chromium: find people by name words and e-mail prefixes, confirm
/// each destructive change (revoke, rotate, disable a client) and see a moot one refused, a
/// new client's secret shown once, the audit log filtered and exported; every page passes
/// axe-core with no serious violation, at desktop and phone width.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_use_with_confirmations_search_and_export_is_accessible_in_chromium() {
    let driver = start_driver();
    let axe = axe_source();
    let app = app_at_its_own_address(Backend::Sqlite, true).await;
    for (sub, name, email) in [
        ("s-ada", "Ada Lovelace", "ada.lovelace@example.com"),
        ("s-adam", "Adam Smith", "adam@econ.example"),
        ("s-grace", "Grace Hopper", "grace@navy.example"),
    ] {
        let token = app.google.id_token(json!({"sub": sub, "name": name, "email": email}));
        app.exchange(&token, &[("device_name", &format!("{name}'s phone"))]).await.assert_status(200);
    }
    let grace = app.sign_in_as("s-grace").await;
    let root = dev_user(&app, "root").await;
    assert!(app.run_cli(&["admins", "grant", &root]).await.status.success());
    let client = browser(&driver).await;
    sign_in_through_dev(&client, &app, "root").await;
    client.wait().for_element(Locator::Id("count-users")).await.expect("the overview");
    assert_accessible(&client, &axe, "overview").await;

    // Search by name words and by the start of an e-mail.
    client.goto(&app.url("/admin/users")).await.unwrap();
    for (q, names) in [
        ("lovelace", json!(["Ada Lovelace"])),
        ("ada", json!(["Adam Smith", "Ada Lovelace"])),
        ("grace@na", json!(["Grace Hopper"])),
    ] {
        let field = client.wait().for_element(Locator::Id("q")).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(q).await.unwrap();
        click_then(&client, "form.search button", Locator::Id("found")).await;
        let mut shown = listed_names(&client).await;
        let mut want = names.clone();
        let sort = |v: &mut serde_json::Value| v.as_array_mut().unwrap().sort_by_key(|n| n.to_string());
        sort(&mut shown);
        sort(&mut want);
        assert_eq!(shown, want, "search {q}");
    }
    save_screenshot(&client, "search-by-email-prefix.png").await;
    assert_accessible(&client, &axe, "search results").await;

    // Revoke a device: the confirmation, Cancel changes nothing, confirming revokes, and going
    // back to the confirmation finds it already done.
    let user_page = app.url(&format!("/admin/users/{}", grace.user_id));
    client.goto(&user_page).await.unwrap();
    assert_accessible(&client, &axe, "user page").await;
    let revoke_link = format!("#device-{} a.button", grace.device_id);
    click_then(&client, &revoke_link, Locator::Css("form.confirm")).await;
    assert_accessible(&client, &axe, "confirmation").await;
    save_screenshot(&client, "confirm-revoke.png").await;
    click_then(&client, "form.confirm a.button", Locator::Css("section.actions")).await;
    assert_eq!(app.count("devices WHERE revoked_at IS NOT NULL").await, 0, "Cancel revoked nothing");
    click_then(&client, &revoke_link, Locator::Css("form.confirm")).await;
    let confirm_url = client.current_url().await.unwrap();
    click_then(&client, "form.confirm button.danger", Locator::Css("p.notice")).await;
    assert_eq!(
        app.count(&format!("devices WHERE id = '{}' AND revoked_at IS NOT NULL", grace.device_id)).await,
        1
    );
    let ended = client.find(Locator::Css(&format!("#device-{} .ending", grace.device_id))).await.unwrap();
    assert!(ended.text().await.unwrap().contains("by admin root: revoked"), "the device's end is explained");
    client.goto(confirm_url.as_str()).await.unwrap();
    client
        .wait()
        .for_element(Locator::XPath("//h1[text()='Already done']"))
        .await
        .expect("a moot confirmation");
    assert!(client.find(Locator::Css("form.confirm")).await.is_err(), "nothing to confirm");
    save_screenshot(&client, "confirm-moot.png").await;

    // Rotate signing keys: confirmed first.
    client.goto(&app.url("/admin/keys")).await.unwrap();
    assert_accessible(&client, &axe, "keys").await;
    let keys = app.count("signing_keys").await;
    client.find(Locator::LinkText("Rotate now…")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("form.confirm")).await.unwrap();
    assert_eq!(app.count("signing_keys").await, keys, "the confirmation changes nothing");
    click_then(&client, "form.confirm button.danger", Locator::Css("p.notice")).await;
    assert_eq!(app.count("signing_keys").await, keys + 1);

    // A confidential client: its secret once (reloading shows it no more), then disabled
    // after a confirmation.
    client.goto(&app.url("/admin/clients")).await.unwrap();
    assert_accessible(&client, &axe, "clients").await;
    client.find(Locator::Id("client_id")).await.unwrap().send_keys("reports").await.unwrap();
    client.find(Locator::Css("input[name=kind][value=confidential]")).await.unwrap().click().await.unwrap();
    click_then(&client, "form.stacked button[type=submit]", Locator::Id("secret")).await;
    assert!(client.current_url().await.unwrap().path().ends_with("/reports/created"));
    assert_accessible(&client, &axe, "client created").await;
    client.refresh().await.unwrap();
    client.wait().for_element(Locator::Css("main h1")).await.unwrap();
    assert!(client.find(Locator::Id("secret")).await.is_err(), "the secret is shown once");
    assert_eq!(app.count("clients").await, 1, "reloading made nothing");
    client.goto(&app.url("/admin/clients")).await.unwrap();
    client.find(Locator::Css("a[aria-label='Disable reports']")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("form.confirm")).await.unwrap();
    click_then(&client, "form.confirm button.danger", Locator::Css("p.notice")).await;
    assert_eq!(app.count("clients WHERE disabled_at IS NOT NULL").await, 1);

    // The audit log: filtered by actor prefix and action, and exported as filtered.
    client.goto(&app.url("/admin/audit")).await.unwrap();
    client.find(Locator::Id("actor")).await.unwrap().send_keys("admin").await.unwrap();
    client.find(Locator::Css("#action option[value='device.revoke']")).await.unwrap().click().await.unwrap();
    click_then(&client, "form.filters button", Locator::Id("paging-summary")).await;
    let summary = client.find(Locator::Id("paging-summary")).await.unwrap().text().await.unwrap();
    assert!(summary.contains("Events 1–1 of 1"), "{summary}");
    assert_accessible(&client, &axe, "audit log").await;
    save_screenshot(&client, "audit-filtered.png").await;
    // The link, followed with the browser's session (the console's CSP lets no page fetch).
    let href = client.find(Locator::Id("export-csv")).await.unwrap().prop("href").await.unwrap().unwrap();
    let session = client.get_named_cookie("__Host-idbridge-admin").await.unwrap();
    let csv = app
        .client
        .get(&href)
        .header("cookie", format!("__Host-idbridge-admin={}", session.value()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 2, "a header and the one event: {csv}");
    assert!(csv.lines().nth(1).unwrap().contains(",device.revoke,admin:"), "{csv}");

    // At a phone's width too.
    client.set_window_size(390, 844).await.unwrap();
    for page in ["/admin", "/admin/users?q=ada", &format!("/admin/users/{}", grace.user_id), "/admin/audit"] {
        client.goto(&app.url(page)).await.unwrap();
        client.wait().for_element(Locator::Css("main h1")).await.unwrap();
        assert_accessible(&client, &axe, &format!("{page} at 390px")).await;
    }
    client.close().await.unwrap();
}

/// A page on another site (a `data:` page: an opaque origin) with a link and a form aimed at
/// the console.
fn other_site(html: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(html.as_bytes()).collect();
    format!("data:text/html,{}", encoded.replace('+', "%20"))
}

/// Deep links from another site in Chromium: signed out, the link leads through sign-in to the
/// page it names; signed in, it opens the page without a second session; a form on that site
/// that posts a change is refused (the Strict cookie stays home) and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_links_from_another_site_in_chromium() {
    let driver = start_driver();
    let app = app_at_its_own_address(Backend::Sqlite, true).await;
    let grace = app.sign_in_as("s-grace").await;
    let root = dev_user(&app, "root").await;
    assert!(app.run_cli(&["admins", "grant", &root]).await.status.success());
    let client = browser(&driver).await;
    let target = app.url(&format!("/admin/users/{}", grace.user_id));
    let ticket =
        other_site(&format!("<!doctype html><title>Ticket</title><a id=go href=\"{target}\">the user</a>"));

    // Signed out: through the sign-in, to the page the link names.
    client.goto(&ticket).await.unwrap();
    client.find(Locator::Id("go")).await.unwrap().click().await.unwrap();
    through_dev_provider(&client, "root").await;
    client.wait().for_element(Locator::Css("section.actions")).await.expect("the user page after sign-in");
    assert_eq!(client.current_url().await.unwrap().as_str(), target);
    assert_eq!(app.count("admin_sessions").await, 1);

    // Signed in: the link opens the page at once, with no second session.
    client.goto(&ticket).await.unwrap();
    client.find(Locator::Id("go")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::Css("section.actions")).await.expect("the user page");
    assert_eq!(client.current_url().await.unwrap().as_str(), target);
    assert_eq!(app.count("admin_sessions").await, 1, "no second session");
    save_screenshot(&client, "deep-link-signed-in.png").await;

    // A form on the other site posting a change: refused, nothing changed.
    let csrf =
        client.find(Locator::Css("input[name=csrf]")).await.unwrap().prop("value").await.unwrap().unwrap();
    let forged = other_site(&format!(
        "<!doctype html><title>Forged</title><form method=post action=\"{target}/revoke-all\">\
         <input type=hidden name=csrf value=\"{csrf}\"><button id=send>send</button></form>"
    ));
    client.goto(&forged).await.unwrap();
    client.find(Locator::Id("send")).await.unwrap().click().await.unwrap();
    client.wait().for_element(Locator::XPath("//h1[text()='Signed out']")).await.expect("a refusal");
    assert_eq!(
        app.count("devices WHERE revoked_at IS NULL AND client_id = 'app'").await,
        1,
        "nothing revoked"
    );
    client.close().await.unwrap();
}
