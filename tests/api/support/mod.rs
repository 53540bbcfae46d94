//! Test harness: starts idbridge in-process against a fresh database and a fake Google.
#![allow(dead_code)]

pub mod broken_graph;
pub mod browser;
pub mod dpop;
pub mod fake_apple;
pub mod fake_facebook;
pub mod fake_google;
pub mod logout_receiver;
pub mod pgbouncer;
pub mod private_pg;
pub mod server_process;
pub mod test_db;

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

pub use browser::{Browser, Visit};
pub use fake_facebook::FakeFacebook;
pub use fake_google::FakeGoogle;
pub use test_db::TestDb;

pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const PUBLIC_URL: &str = "http://idbridge.test";
pub const AUDIENCE: &str = "http://idbridge.test/api";
pub const SVC_SECRET: &str = "svc-secret";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    /// PostgreSQL through a real PgBouncer in transaction mode (`prepared_statements = false`,
    /// `listen_url` straight to PostgreSQL). The test's own SQL goes straight to PostgreSQL.
    PgBouncer,
}

/// One `#[tokio::test]` named `$variant` that runs `super::$name` on `$backend`.
macro_rules! backend_test {
    ($name:ident, $variant:ident, $backend:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $variant() {
            super::$name(crate::support::Backend::$backend).await
        }
    };
}

/// `both_backends!(some_test);` for `async fn some_test(backend: Backend)` generates
/// `some_test::sqlite` and `some_test::postgres`.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                backend_test!($name, sqlite, Sqlite);
                backend_test!($name, postgres, Postgres);
            }
        )+
    };
}

/// The `secret_hash` of `svc-secret`, in the form `idbridge clients hash-secret` prints.
pub fn svc_secret_hash() -> String {
    idbridge::clients::hash_secret(SVC_SECRET)
}

/// The confidential client whose `secret_hash` is an argon2 PHC string, as older
/// configurations have (enabled by `TestConfig::legacy_client`).
pub const LEGACY_CLIENT: &str = "legacy-svc";
pub const LEGACY_SECRET: &str = "legacy-secret";

/// Argon2 PHC string of `legacy-secret` (computed once per test binary).
pub fn legacy_secret_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"idbridge-test-salt").expect("salt");
        argon2::Argon2::default()
            .hash_password(LEGACY_SECRET.as_bytes(), &salt)
            .expect("argon2 hash")
            .to_string()
    })
}

/// The knobs tests turn; everything else is the fixed test configuration.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub access_ttl: String,
    pub refresh_idle_ttl: String,
    pub refresh_max_ttl: String,
    pub refresh_reuse_grace: String,
    pub require_nonce: bool,
    pub hosted_domain: String,
    pub dev: bool,
    /// The scopes of client `app`.
    pub app_scopes: Vec<String>,
    /// `false` removes client `app` from the configuration.
    pub app_client: bool,
    /// Adds [`LEGACY_CLIENT`], whose secret is an argon2 hash.
    pub legacy_client: bool,
    pub max_devices_per_user: u32,
    pub per_ip_per_second: u32,
    pub per_client_per_second: u32,
    /// Master key file paths in keyring order; empty means the app's own `master.key`.
    pub master_keys: Vec<String>,
    /// The scopes of the confidential client `svc`.
    pub svc_scopes: Vec<String>,
    /// Adds `[providers.facebook]`, pointed at the fakes.
    pub facebook: bool,
    /// `[providers.facebook] graph_url`, when not the fake's (an unreachable Graph).
    pub graph_url: Option<String>,
    /// `[database] statement_timeout`.
    pub statement_timeout: String,
    /// More `[database]` lines (the pooler's `prepared_statements` and `listen_url`).
    pub database_extra: String,
    /// The `app` client's `backchannel_logout_uri`, when set.
    pub app_logout_uri: Option<String>,
    /// The `app` client's `post_logout_redirect_uris`.
    pub app_post_logout_redirect_uris: Vec<String>,
    /// `[tokens] dpop_nonce`.
    pub dpop_nonce: bool,
    /// Appended to the configuration as it is (more sections, e.g. `[[providers.oidc]]`).
    pub extra: String,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            access_ttl: "10m".into(),
            refresh_idle_ttl: "30d".into(),
            refresh_max_ttl: "90d".into(),
            refresh_reuse_grace: "10s".into(),
            require_nonce: false,
            hosted_domain: String::new(),
            dev: false,
            app_scopes: vec!["openid".into(), "profile".into(), "api".into()],
            app_client: true,
            legacy_client: false,
            max_devices_per_user: 100,
            per_ip_per_second: 100,
            per_client_per_second: 5000,
            master_keys: Vec::new(),
            svc_scopes: vec!["api".into()],
            facebook: false,
            graph_url: None,
            statement_timeout: "10s".into(),
            database_extra: String::new(),
            app_logout_uri: None,
            app_post_logout_redirect_uris: Vec::new(),
            dpop_nonce: false,
            extra: String::new(),
        }
    }
}

impl TestConfig {
    pub fn render(&self, db_url: &str, master_key_path: &str, google_issuer: &str) -> String {
        self.render_with(db_url, master_key_path, google_issuer, None)
    }

    /// The configuration, with `[providers.facebook]` pointed at `fakes` when asked for.
    pub fn render_with(
        &self,
        db_url: &str,
        master_key_path: &str,
        google_issuer: &str,
        fakes: Option<(&FakeFacebook, &FakeGoogle)>,
    ) -> String {
        let master_keys: Vec<String> = if self.master_keys.is_empty() {
            vec![format!("\"file:{master_key_path}\"")]
        } else {
            self.master_keys.iter().map(|p| format!("\"file:{p}\"")).collect()
        };
        let mut t = format!(
            r#"[server]
bind = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"

[database]
url = "{db_url}"
max_connections = 8
{statement_timeout}{database_extra}
[keys]
master_keys = [{master_keys}]
access_token_alg = "ES256"

[tokens]
audience = "{AUDIENCE}"
access_ttl = "{access_ttl}"
refresh_idle_ttl = "{idle}"
refresh_max_ttl = "{max}"
refresh_reuse_grace = "{grace}"
max_devices_per_user = {max_devices}
{dpop_nonce}
[rate_limits]
per_ip_per_second = {per_ip}
per_client_per_second = {per_client}

[providers.google]
client_ids = ["google-client-1", "google-client-2"]
issuer = "{google_issuer}"
client_secret = "google-secret"
require_nonce = {require_nonce}
hosted_domain = "{hd}"

[[clients]]
client_id = "svc"
kind = "confidential"
secret_hash = "{secret_hash}"
redirect_uris = []
scopes = [{svc_scopes}]
"#,
            access_ttl = self.access_ttl,
            idle = self.refresh_idle_ttl,
            max = self.refresh_max_ttl,
            grace = self.refresh_reuse_grace,
            require_nonce = self.require_nonce,
            hd = self.hosted_domain,
            secret_hash = svc_secret_hash(),
            master_keys = master_keys.join(", "),
            svc_scopes = self.svc_scopes.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", "),
            max_devices = self.max_devices_per_user,
            per_ip = self.per_ip_per_second,
            per_client = self.per_client_per_second,
            // Only when a test sets it, so the rendering stays that of the defaults otherwise.
            statement_timeout = match self.statement_timeout.as_str() {
                "10s" => String::new(),
                other => format!("statement_timeout = \"{other}\"\n"),
            },
            database_extra = self.database_extra,
            dpop_nonce = if self.dpop_nonce { "dpop_nonce = true\n" } else { "" },
        );
        if self.app_client {
            let scopes: Vec<String> = self.app_scopes.iter().map(|s| format!("\"{s}\"")).collect();
            t.push_str(&format!(
                "\n[[clients]]\nclient_id = \"app\"\nkind = \"public\"\nredirect_uris = [\"com.example.app:/cb\", \"http://127.0.0.1/callback\", \"https://app.example/cb\"]\nscopes = [{}]\n",
                scopes.join(", ")
            ));
            if let Some(uri) = &self.app_logout_uri {
                t.push_str(&format!("backchannel_logout_uri = \"{uri}\"\n"));
            }
            if !self.app_post_logout_redirect_uris.is_empty() {
                let uris: Vec<String> =
                    self.app_post_logout_redirect_uris.iter().map(|u| format!("\"{u}\"")).collect();
                t.push_str(&format!("post_logout_redirect_uris = [{}]\n", uris.join(", ")));
            }
        }
        if self.legacy_client {
            t.push_str(&format!(
                "\n[[clients]]\nclient_id = \"{LEGACY_CLIENT}\"\nkind = \"confidential\"\nsecret_hash = \"{}\"\nscopes = [\"api\"]\n",
                legacy_secret_hash()
            ));
        }
        if let (true, Some((fb, ll))) = (self.facebook, fakes) {
            t.push_str(&format!(
                "\n[providers.facebook]\napp_id = \"{}\"\napp_secret = \"{}\"\ngraph_url = \"{}\"\ndialog_url = \"{}\"\nlimited_login_issuer = \"{}\"\nlimited_login_jwks_url = \"{}/oauth2/v3/certs\"\n",
                fake_facebook::APP_ID,
                fake_facebook::APP_SECRET,
                self.graph_url.clone().unwrap_or_else(|| fb.graph_url()),
                fb.dialog_url(),
                ll.issuer(),
                ll.issuer(),
            ));
        }
        if self.dev {
            t.push_str("\n[dev]\nenabled = true\n");
        }
        t.push_str(&self.extra);
        t
    }
}

/// Writes a master key file (base64 of 32 random bytes) into `dir`, returns its path.
pub fn write_master_key(dir: &std::path::Path) -> String {
    write_master_key_named(dir, "master.key")
}

/// Writes a master key file named `name` into `dir` (mode 0600), returns its path.
pub fn write_master_key_named(dir: &std::path::Path, name: &str) -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut key).expect("rng");
    let path = dir.join(name);
    std::fs::write(&path, STANDARD.encode(key)).expect("write master key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod master key");
    }
    path.display().to_string()
}

/// A response read completely.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, `Value::Null` when it is not JSON.
    pub body: Value,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Answer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("read response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, text, body }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    }

    /// `error` of an RFC 6749 error body.
    pub fn error(&self) -> Option<&str> {
        self.body.get("error").and_then(Value::as_str)
    }

    pub fn str(&self, field: &str) -> &str {
        self.body
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string field {field:?} in {}", self.text))
    }

    /// Asserts an OAuth error answer: status and `error` code.
    #[track_caller]
    pub fn assert_oauth_error(&self, status: u16, error: &str) {
        assert_eq!(
            (self.status.as_u16(), self.error()),
            (status, Some(error)),
            "expected {status} {error}, got {} {}",
            self.status,
            self.text
        );
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "expected {status}, got {} {}", self.status, self.text);
    }
}

/// How a request authenticates its client.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    /// `client_id` in the form (public client)
    Public(&'a str),
    /// HTTP Basic `id:secret`
    Basic(&'a str, &'a str),
    /// `client_id` + `client_secret` in the form
    Post(&'a str, &'a str),
    /// nothing at all
    Anonymous,
}

/// What a successful sign-in (or refresh) gave back.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub device_id: String,
    /// `sub` of the access token: the idbridge user id
    pub user_id: String,
    /// the Google `sub` the ID token carried (empty for a refresh)
    pub google_sub: String,
    pub body: Value,
}

impl Tokens {
    #[track_caller]
    pub fn from_answer(a: &Answer, google_sub: &str) -> Tokens {
        a.assert_status(200);
        let access_token = a.str("access_token").to_string();
        let user_id = jwt_claims(&access_token)["sub"].as_str().unwrap_or_default().to_string();
        Tokens {
            refresh_token: a.str("refresh_token").to_string(),
            device_id: a.str("device_id").to_string(),
            access_token,
            user_id,
            google_sub: google_sub.to_string(),
            body: a.body.clone(),
        }
    }
}

/// Decodes (without verifying) the claims of a JWS.
pub fn jwt_claims(token: &str) -> Value {
    jwt_part(token, 1)
}

/// Decodes (without verifying) the header of a JWS.
pub fn jwt_header(token: &str) -> Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap_or_else(|| panic!("not a JWS: {token}"));
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("JWS part {i} is not base64url: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("JWS part {i} is not JSON: {e}"))
}

/// Space-separated scope string as a sorted list.
/// Waits until `check` holds, retrying every 20 ms for at most 10 s (for what another process
/// or replica changes: a notification or a catch-up read). Fails naming `what` when it never
/// holds. Speed is measured in the load benchmark, not here.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(std::time::Duration::from_secs(10), &format!("never happened: {what}"), check).await
}

/// Waits until `check` holds, for at most the 1 second that API.md promises for a revocation
/// to reach every running idbridge. This is the contract's bound on a behaviour, not a speed
/// target (those are measured in the load benchmark).
pub async fn within_the_contracts_second<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_until(std::time::Duration::from_secs(1), &format!("not within 1 second: {what}"), check).await
}

async fn wait_until<F, Fut>(limit: std::time::Duration, failure: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The default retention (`[retention]` unset): audit events a year, ended devices 30 days.
pub fn default_retention() -> idbridge::housekeeping::Retention {
    idbridge::housekeeping::Retention {
        audit_events_secs: 365 * 86_400,
        revoked_devices_secs: 30 * 86_400,
        admin_sessions: idbridge::admin::sessions::SessionPolicy { idle_secs: 1800, max_secs: 43_200 },
    }
}

/// `all_backends!(some_test);` is [`both_backends!`] plus `some_test::pgbouncer`: the core
/// flows run behind a transaction-mode pooler too (skipped where PgBouncer is not installed).
macro_rules! all_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                backend_test!($name, sqlite, Sqlite);
                backend_test!($name, postgres, Postgres);

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn pgbouncer() {
                    if crate::support::pgbouncer::url_for("postgres").is_some() {
                        super::$name(crate::support::Backend::PgBouncer).await
                    }
                }
            }
        )+
    };
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An app on a fixed loopback port whose public URL is its real address, for clients that
/// follow the issuer's URLs themselves (a browser, a JWKS client).
pub async fn app_at_its_own_address(backend: Backend, dev: bool) -> TestApp {
    app_at_its_own_address_with(backend, |c| c.dev = dev).await
}

/// As [`app_at_its_own_address`], with `configure` applied to the configuration.
pub async fn app_at_its_own_address_with(
    backend: Backend,
    configure: impl FnOnce(&mut TestConfig),
) -> TestApp {
    let base = spawn_app_with(backend, configure).await;
    let port = free_port();
    let toml = base
        .config_text()
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"127.0.0.1:{port}\""))
        .replace(
            &format!("public_url = \"{PUBLIC_URL}\""),
            &format!("public_url = \"http://127.0.0.1:{port}\""),
        );
    base.start_with_toml(&toml).await
}

pub fn scope_set(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

#[derive(Clone)]
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub google: Arc<FakeGoogle>,
    pub facebook: Arc<FakeFacebook>,
    /// Facebook Limited Login: an RS256 issuer with a JWKS, like Facebook's.
    pub limited_login: Arc<FakeGoogle>,
    pub db: Arc<TestDb>,
    pub config: TestConfig,
    dir: Arc<tempfile::TempDir>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Dev mode on (`[dev] enabled = true`): the service registers `dev-app` and `dev-service`.
pub async fn spawn_dev_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.dev = true).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut TestConfig)) -> TestApp {
    let mut config = TestConfig::default();
    configure(&mut config);
    let google = Arc::new(FakeGoogle::start().await);
    let fakes = (Arc::new(FakeFacebook::start().await), Arc::new(FakeGoogle::start().await));
    let db = Arc::new(
        tokio::task::spawn_blocking(move || TestDb::create(backend)).await.expect("create test database"),
    );
    config.database_extra = db.database_extra.clone();
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    write_master_key(dir.path());
    start(config, google, fakes, db, dir).await
}

/// Where idbridge's log goes in the tests: one buffer for the whole test process (the servers
/// of every test run here), read by the tests that look for secrets in it.
static LOG: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

#[derive(Clone, Copy)]
struct LogSink;

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

/// Sends idbridge's log (info and up, as `serve` writes it) into the buffer [`captured_log`] reads.
fn capture_logs() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_ansi(false)
            .with_writer(LogSink)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Everything the servers of this test process have logged so far.
pub fn captured_log() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

async fn start(
    config: TestConfig,
    google: Arc<FakeGoogle>,
    (facebook, limited_login): (Arc<FakeFacebook>, Arc<FakeGoogle>),
    db: Arc<TestDb>,
    dir: Arc<tempfile::TempDir>,
) -> TestApp {
    capture_logs();
    let master_key = dir.path().join("master.key").display().to_string();
    let toml = config.render_with(&db.url, &master_key, google.issuer(), Some((&facebook, &limited_login)));
    let settings = match idbridge::config::Settings::from_toml_str(&toml, Vec::<(String, String)>::new()) {
        Ok(s) => s,
        Err(e) => panic!("test configuration refused: {e}\n{toml}"),
    };
    let app = match idbridge::app::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => panic!("Application::build failed: {e} ({e:?})"),
    };
    let port = app.port();
    tokio::spawn(app.run_until_stopped());

    // reqwest is built with rustls but without a default crypto provider (plain http here).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client,
        google,
        facebook,
        limited_login,
        db,
        config,
        dir,
    }
}

impl TestApp {
    /// Another idbridge process on the same database, fake Google and key directory, with
    /// this app's configuration changed by `configure` (an operator's restart).
    pub async fn restart_with(&self, configure: impl FnOnce(&mut TestConfig)) -> TestApp {
        let mut config = self.config.clone();
        configure(&mut config);
        let fakes = (self.facebook.clone(), self.limited_login.clone());
        start(config, self.google.clone(), fakes, self.db.clone(), self.dir.clone()).await
    }

    /// This app's configuration as text.
    pub fn config_text(&self) -> String {
        let master_key = self.dir().join("master.key").display().to_string();
        let fakes = Some((self.facebook.as_ref(), self.limited_login.as_ref()));
        self.config.render_with(&self.db.url, &master_key, self.google.issuer(), fakes)
    }

    /// Another idbridge on this app's database and fakes, configured by `toml` as given.
    pub async fn start_with_toml(&self, toml: &str) -> TestApp {
        let settings = idbridge::config::Settings::from_toml_str(toml, Vec::<(String, String)>::new())
            .unwrap_or_else(|e| panic!("configuration refused: {e}"));
        let app = idbridge::app::Application::build(settings).await.expect("Application::build");
        let port = app.port();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            client: self.client.clone(),
            google: self.google.clone(),
            facebook: self.facebook.clone(),
            limited_login: self.limited_login.clone(),
            db: self.db.clone(),
            config: self.config.clone(),
            dir: self.dir.clone(),
        }
    }

    /// The folder that holds this app's master key (and whatever a test writes there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// This app's configuration as a file, for running the `idbridge` binary against it.
    pub fn write_config(&self) -> std::path::PathBuf {
        let master_key = self.dir().join("master.key").display().to_string();
        let path = self.dir().join("idbridge.toml");
        let fakes = Some((self.facebook.as_ref(), self.limited_login.as_ref()));
        std::fs::write(
            &path,
            self.config.render_with(&self.db.url, &master_key, self.google.issuer(), fakes),
        )
        .expect("write config");
        path
    }

    /// Runs `idbridge ARGS --config <this app's config>`, blocking in a worker thread.
    pub async fn run_cli(&self, args: &[&str]) -> std::process::Output {
        let config = self.write_config();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_idbridge"));
        command.args(args).arg("--config").arg(config).stdin(std::process::Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("IDBRIDGE") {
                command.env_remove(k);
            }
        }
        tokio::task::spawn_blocking(move || command.output().expect("run idbridge")).await.expect("cli task")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> Answer {
        let r = self.client.get(self.url(path)).send().await.expect("GET failed");
        Answer::read(r).await
    }

    pub async fn get_bearer(&self, path: &str, token: &str) -> Answer {
        let r = self.client.get(self.url(path)).bearer_auth(token).send().await.expect("GET failed");
        Answer::read(r).await
    }

    pub async fn delete_bearer(&self, path: &str, token: &str) -> Answer {
        let r = self.client.delete(self.url(path)).bearer_auth(token).send().await.expect("DELETE failed");
        Answer::read(r).await
    }

    /// POST a JSON body with a Bearer token.
    pub async fn post_json_bearer(&self, path: &str, token: &str, body: &Value) -> Answer {
        let r =
            self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("POST failed");
        Answer::read(r).await
    }

    /// POST a JSON body as a confidential client (HTTP Basic).
    pub async fn post_json_basic(&self, path: &str, client: &str, secret: &str, body: &Value) -> Answer {
        let r = self.client.post(self.url(path)).basic_auth(client, Some(secret)).json(body).send().await;
        Answer::read(r.expect("POST failed")).await
    }

    pub async fn post_bearer(&self, path: &str, token: &str) -> Answer {
        let r = self.client.post(self.url(path)).bearer_auth(token).send().await.expect("POST failed");
        Answer::read(r).await
    }

    /// POST a form, authenticating the client as `auth` says.
    pub async fn post_form(&self, path: &str, auth: Auth<'_>, form: &[(&str, &str)]) -> Answer {
        self.post_form_with(path, auth, form, &[]).await
    }

    /// [`Self::post_form`] with more request headers (a `DPoP` proof).
    pub async fn post_form_with(
        &self,
        path: &str,
        auth: Auth<'_>,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut fields: Vec<(String, String)> =
            form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut req = self.client.post(self.url(path));
        match auth {
            Auth::Public(id) => {
                if !fields.iter().any(|(k, _)| k == "client_id") {
                    fields.push(("client_id".into(), id.into()));
                }
            }
            Auth::Post(id, secret) => {
                fields.push(("client_id".into(), id.into()));
                fields.push(("client_secret".into(), secret.into()));
            }
            Auth::Basic(id, secret) => req = req.basic_auth(id, Some(secret)),
            Auth::Anonymous => {}
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let r = req.form(&fields).send().await.expect("POST form failed");
        Answer::read(r).await
    }

    /// Token exchange of `id_token` by client `app`; `extra` adds or overrides form fields.
    pub async fn exchange(&self, id_token: &str, extra: &[(&str, &str)]) -> Answer {
        self.exchange_as(Auth::Public("app"), id_token, extra).await
    }

    pub async fn exchange_as(&self, auth: Auth<'_>, id_token: &str, extra: &[(&str, &str)]) -> Answer {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN_TYPE),
        ];
        for (k, v) in extra {
            form.retain(|(fk, _)| fk != k);
            form.push((k, v));
        }
        self.post_form("/oauth/token", auth, &form).await
    }

    /// Signs in a brand-new Google user.
    pub async fn sign_in(&self) -> Tokens {
        self.sign_in_as(&fake_google::random_sub()).await
    }

    /// Signs in Google subject `sub` with a fresh ID token (a new device each time).
    pub async fn sign_in_as(&self, sub: &str) -> Tokens {
        let token = self.google.id_token_for(sub);
        let a = self.exchange(&token, &[]).await;
        Tokens::from_answer(&a, sub)
    }

    pub async fn refresh(&self, refresh_token: &str) -> Answer {
        self.refresh_as(Auth::Public("app"), refresh_token).await
    }

    pub async fn refresh_as(&self, auth: Auth<'_>, refresh_token: &str) -> Answer {
        self.post_form(
            "/oauth/token",
            auth,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        )
        .await
    }

    pub async fn revoke(&self, token: &str, auth: Auth<'_>) -> Answer {
        self.post_form("/oauth/revoke", auth, &[("token", token)]).await
    }

    /// Introspection as the confidential client `svc` (HTTP Basic).
    pub async fn introspect(&self, token: &str) -> Answer {
        self.introspect_as(Auth::Basic("svc", SVC_SECRET), token).await
    }

    pub async fn introspect_as(&self, auth: Auth<'_>, token: &str) -> Answer {
        self.post_form("/oauth/introspect", auth, &[("token", token)]).await
    }

    pub async fn get_me(&self, access_token: &str) -> Answer {
        self.get_bearer("/v1/me", access_token).await
    }

    /// A fresh nonce from `POST /oauth/nonce` for client `app`.
    pub async fn nonce(&self) -> String {
        let a = self.post_form("/oauth/nonce", Auth::Public("app"), &[]).await;
        a.assert_status(200);
        a.str("nonce").to_string()
    }

    /// `SELECT COUNT(*) FROM <from>`; `from` may carry a WHERE clause.
    pub async fn count(&self, from: &str) -> i64 {
        let backend = self.db.backend;
        let url = self.db.admin_url.clone();
        let from = from.to_string();
        tokio::task::spawn_blocking(move || count_at(backend, &url, &from)).await.expect("count task")
    }

    /// Holds a transaction open on the service's database (see `TestDb::hold_blocking`).
    pub async fn hold(&self, sql: &str) -> test_db::HeldTransaction {
        let db = test_db::TestDb::attach(self.db.backend, &self.db.admin_url);
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || db.hold_blocking(&sql)).await.expect("hold task")
    }

    /// Runs SQL against the service's database (set-up only).
    pub async fn execute_sql(&self, sql: &str) {
        let backend = self.db.backend;
        let url = self.db.admin_url.clone();
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || exec_at(backend, &url, &sql)).await.expect("sql task")
    }

    /// users, identities, devices, refresh_tokens and used_assertions are all empty.
    #[track_caller]
    pub fn assert_nothing_written(&self) -> impl std::future::Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let mut counts = Vec::new();
            for t in ["users", "identities", "devices", "refresh_tokens", "used_assertions"] {
                counts.push((t, self.count(t).await));
            }
            assert!(
                counts.iter().all(|(_, n)| *n == 0),
                "a refused request wrote rows: {counts:?} (asserted at {caller})"
            );
        }
    }
}

fn count_at(backend: Backend, url: &str, from: &str) -> i64 {
    let db = test_db::TestDb::attach(backend, url);
    db.count_blocking(from)
}

fn exec_at(backend: Backend, url: &str, sql: &str) {
    let db = test_db::TestDb::attach(backend, url);
    db.execute_blocking(sql)
}
