//! Load benchmark of the real `idbridge` binary over loopback HTTP.
//!
//! `cargo bench --bench load` (env: LOAD_DB=sqlite|postgres, default sqlite; LOAD_SECS per
//! scenario window, default 10; LOAD_PG_URL / IDBRIDGE_TEST_PG_URL, default
//! postgres://postgres@127.0.0.1:5432; LOAD_MINT_RATE, the first guess of sign-ins per second
//! used to size the pre-minted ID tokens, default 1500).
//!
//! Starts a fake Google in-process, writes a config into a temp dir (Postgres: a fresh database,
//! dropped at the end), starts `idbridge serve --config FILE` as a child, waits for /readyz, then
//! for 16 and 64 concurrent tasks drives each scenario for LOAD_SECS:
//!   (a) token exchange, new users      (b) token exchange, 1000 returning users
//!   (c) refresh chains                 (d) introspection (client svc, HTTP Basic)
//!   (e) GET /.well-known/jwks.json    (g) POST /v1/crypto/decrypt of 1 KiB (Bearer)
//! then once, under attack (LOAD_ATTACKERS tasks, default 1000, sending wrong client secrets
//! in a loop for LOAD_SECS): one legitimate introspection loop, for a client whose secret_hash
//! is the SHA-256 form and for one with a legacy argon2 hash (rate limits are off in this
//! benchmark, so every wrong secret reaches verification: the worst case),
//! and prints requests, req/s, p50, p99 and errors per scenario, the server's peak RSS, and on
//! Postgres pgbench runs of the SQL a refresh does (as specified: every client on one device;
//! and one device per client), with the ratio refresh req/s : pgbench tps; then, side by side,
//! `pgbench -N -c 16 -j 2` on a scale-1 database of its own with every c=16 scenario as a
//! multiple of it; and the time until a second replica refuses the access token of a device
//! revoked on the first (1,000 revocations, p50/p99/max).
//!
//! `LOAD_BIN` runs another build of the binary (for an A/B of a change).
//!
//! With `LOAD_SOAK_SECS` set it runs the soak instead (see `load/soak.rs`): mixed traffic with
//! periodic faults for that long, sampled every 10 s.

#[path = "load/dpop.rs"]
mod dpop;
#[path = "../tests/api/support/dpop.rs"]
mod dpop_key;
#[path = "../tests/api/support/fake_google.rs"]
mod fake_google;
#[path = "load/soak.rs"]
mod soak;

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use fake_google::FakeGoogle;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const CONCURRENCIES: [usize; 2] = [16, 64];
const RETURNING_USERS: usize = 1000;

// ---- process and database guards ------------------------------------------------------------

/// Kills the server child on drop (also on panic).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Drops the bench's Postgres database on drop.
struct PgDbGuard {
    server: String,
    name: String,
}

impl Drop for PgDbGuard {
    fn drop(&mut self) {
        if let Ok(mut c) = PgConnection::establish(&format!("{}/postgres", self.server)) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

// ---- measurement ------------------------------------------------------------------------------

enum Step {
    Ok,
    Err,
    /// no more pre-minted input: this task stops
    Exhausted,
}

struct Report {
    scenario: &'static str,
    conc: usize,
    requests: usize,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    exhausted: bool,
}

impl Report {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self) {
        println!(
            "{:<24} c={:<3} requests={:<7} req/s={:<9.1} p50={:<9.2?} p99={:<9.2?} errors={}{}",
            self.scenario,
            self.conc,
            self.requests,
            self.rps(),
            self.p50,
            self.p99,
            self.errors,
            if self.exhausted {
                format!(" (pre-minted tokens ran out after {:.1?})", self.elapsed)
            } else {
                String::new()
            }
        );
        let _ = std::io::stdout().flush();
    }
}

/// Runs `conc` tasks, each starting from its own state, calling `step` until `window` is over or
/// the step says `Exhausted`. Every `Ok`/`Err` step is one timed request.
async fn drive<S, F, Fut>(scenario: &'static str, window: Duration, states: Vec<S>, step: F) -> Report
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (S, Step)> + Send,
{
    let conc = states.len();
    let start = Instant::now();
    let deadline = start + window;
    let mut handles = Vec::new();
    for state in states {
        let step = step.clone();
        handles.push(tokio::spawn(async move {
            let mut state = state;
            let mut lat = Vec::with_capacity(4096);
            let mut errors = 0u64;
            let mut exhausted = false;
            while Instant::now() < deadline {
                let t = Instant::now();
                let (s, r) = step(state).await;
                state = s;
                match r {
                    Step::Ok => lat.push(t.elapsed()),
                    Step::Err => {
                        lat.push(t.elapsed());
                        errors += 1;
                    }
                    Step::Exhausted => {
                        exhausted = true;
                        break;
                    }
                }
            }
            (lat, errors, exhausted, Instant::now())
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut exhausted = false;
    let mut last = start;
    for h in handles {
        let (lat, e, x, end) = h.await.expect("load task panicked");
        all.extend(lat);
        errors += e;
        exhausted |= x;
        last = last.max(end);
    }
    all.sort_unstable();
    let pct = |p: usize| {
        if all.is_empty() {
            Duration::ZERO
        } else {
            all[(all.len() * p / 100).min(all.len() - 1)]
        }
    };
    Report {
        scenario,
        conc,
        requests: all.len(),
        errors,
        elapsed: last - start,
        p50: pct(50),
        p99: pct(99),
        exhausted,
    }
}

// ---- pre-minted ID tokens ---------------------------------------------------------------------

struct TokenPool {
    tokens: Vec<String>,
    next: AtomicUsize,
}

impl TokenPool {
    fn take(&self) -> Option<&str> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.tokens.get(i).map(String::as_str)
    }
}

/// Mints `n` ID tokens on two threads (outside any timed window). With `subs`, token i is for
/// `subs[i % subs.len()]`, else every token is for a new random subject.
fn mint(google: &FakeGoogle, n: usize, subs: Option<&[String]>) -> Vec<String> {
    let t = Instant::now();
    let threads = 2;
    let mut out: Vec<Vec<String>> = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    (k..n)
                        .step_by(threads)
                        .map(|i| match subs {
                            Some(s) => google.id_token_for(&s[i % s.len()]),
                            None => google.id_token(serde_json::json!({})),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            out.push(h.join().expect("mint thread"));
        }
    });
    let tokens: Vec<String> = out.into_iter().flatten().collect();
    eprintln!("  minted {} ID tokens in {:.1?}", tokens.len(), t.elapsed());
    tokens
}

// ---- HTTP helpers -------------------------------------------------------------------------------

#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    base: String,
}

impl Target {
    async fn exchange(&self, id_token: &str) -> Result<serde_json::Value, String> {
        let r = self
            .client
            .post(format!("{}/oauth/token", self.base))
            .form(&[
                ("grant_type", TOKEN_EXCHANGE),
                ("subject_token", id_token),
                ("subject_token_type", ID_TOKEN_TYPE),
                ("client_id", "app"),
            ])
            .send()
            .await;
        json_answer(r).await
    }

    async fn refresh(&self, refresh_token: &str) -> Result<serde_json::Value, String> {
        let r = self
            .client
            .post(format!("{}/oauth/token", self.base))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token), ("client_id", "app")])
            .send()
            .await;
        json_answer(r).await
    }
}

/// A 200 answer's JSON; anything else as an error text.
async fn json_answer(r: Result<reqwest::Response, reqwest::Error>) -> Result<serde_json::Value, String> {
    let r = r.map_err(|e| e.to_string())?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

fn field(v: &serde_json::Value, name: &str) -> String {
    v[name].as_str().unwrap_or_default().to_string()
}

/// `tasks` tasks sending introspections with a wrong secret for `client_id` until `window`
/// ends; returns how many answers of each status came back.
async fn attack(
    target: &Target,
    client_id: &'static str,
    tasks: usize,
    window: Duration,
) -> HashMap<u16, usize> {
    let deadline = Instant::now() + window;
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let t = target.clone();
            tokio::spawn(async move {
                let mut seen: HashMap<u16, usize> = HashMap::new();
                while Instant::now() < deadline {
                    let status = t
                        .client
                        .post(format!("{}/oauth/introspect", t.base))
                        .basic_auth(client_id, Some(format!("wrong-{i}")))
                        .form(&[("token", "x")])
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0);
                    *seen.entry(status).or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut all: HashMap<u16, usize> = HashMap::new();
    for h in handles {
        for (status, n) in h.await.expect("attack task") {
            *all.entry(status).or_default() += n;
        }
    }
    all
}

// ---- set-up -------------------------------------------------------------------------------------

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn argon2_hash(secret: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(b"idbridge-load-salt").expect("salt");
    argon2::Argon2::default().hash_password(secret.as_bytes(), &salt).expect("argon2").to_string()
}

fn write_master_key(dir: &Path) -> PathBuf {
    use aws_lc_rs::rand::SecureRandom;
    let mut key = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut key).expect("rng");
    let path = dir.join("master.key");
    std::fs::write(&path, base64::engine::general_purpose::STANDARD.encode(key)).expect("write key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    path
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[derive(QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

/// The SQL a refresh does, for pgbench (columns as in migrations/postgres): all clients on one
/// device, passed with `-D device='<id>'` (simple protocol substitutes variables as text).
const PGBENCH_SCRIPT: &str = r#"\set n random(1, 1000000000)
BEGIN;
UPDATE refresh_tokens SET spent_at = 1, successor_hash = 'n' || :n WHERE token_hash = 'h' || :n AND spent_at IS NULL;
INSERT INTO refresh_tokens (id, device_id, token_hash, parent_id, issued_at, expires_at) VALUES (gen_random_uuid()::text, :device, 'n' || :n || '-' || random(), NULL, 1, 99999999999);
UPDATE devices SET last_seen_at = 2 WHERE id = :device;
COMMIT;
"#;

/// The same, but each pgbench client on its own device (as real refresh chains are), so the
/// single `devices` row is not a lock hot spot.
const PGBENCH_SCRIPT_PER_CLIENT: &str = r#"\set n random(1, 1000000000)
SELECT quote_literal(id) AS dev FROM devices ORDER BY id OFFSET :client_id LIMIT 1 \gset
BEGIN;
UPDATE refresh_tokens SET spent_at = 1, successor_hash = 'n' || :n WHERE token_hash = 'h' || :n AND spent_at IS NULL;
INSERT INTO refresh_tokens (id, device_id, token_hash, parent_id, issued_at, expires_at) VALUES (gen_random_uuid()::text, :dev, 'n' || :n || '-' || random(), NULL, 1, 99999999999);
UPDATE devices SET last_seen_at = 2 WHERE id = :dev;
COMMIT;
"#;

/// Runs pgbench (-c 16 -j 2 -T secs) with `script`; returns its tps.
fn run_pgbench(db_url: &str, dir: &Path, secs: u64, name: &str, script: &str) -> Option<f64> {
    let mut conn = PgConnection::establish(db_url).ok()?;
    let rows: Vec<IdRow> =
        diesel::sql_query("SELECT id FROM devices ORDER BY id LIMIT 1").load(&mut conn).ok()?;
    let device = rows.into_iter().next()?.id;
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, script).ok()?;
    let out = Command::new("pgbench")
        .args(["-n", "-c", "16", "-j", "2", "-T", &secs.to_string(), "-f"])
        .arg(&path)
        .arg("-D")
        .arg(format!("device='{device}'"))
        .arg(db_url)
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            println!("pgbench could not run: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        println!(
            "pgbench {name} failed ({}): {}\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

// ---- main -----------------------------------------------------------------------------------

/// `pgbench -i -s 1` into a database of its own, then `pgbench -N -c 16 -j 2 -T secs`; its tps.
fn run_pgbench_n(server: &str, dir: &Path, secs: u64) -> Option<f64> {
    let name = format!("idbridge_pgbench_{}", std::process::id());
    let mut admin = PgConnection::establish(&format!("{server}/postgres")).ok()?;
    // Two statements: CREATE DATABASE cannot run inside the implicit transaction of a batch.
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).ok()?;
    admin.batch_execute(&format!("CREATE DATABASE {name}")).ok()?;
    let _guard = PgDbGuard { server: server.to_string(), name: name.clone() };
    let url = format!("{server}/{name}");
    let init = Command::new("pgbench").args(["-i", "-s", "1", "-q", &url]).current_dir(dir).output().ok()?;
    if !init.status.success() {
        println!("pgbench -i failed: {}", String::from_utf8_lossy(&init.stderr));
        return None;
    }
    let out = Command::new("pgbench")
        .args(["-N", "-c", "16", "-j", "2", "-T", &secs.to_string(), &url])
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A second replica on the same database; 1,000 devices revoked on the first, each timed until
/// the second refuses its access token (16 at a time; the second is polled every 2 ms).
async fn revocation_propagation(google: &FakeGoogle, first: &Target, config_path: &Path, dir: &Path) {
    let port = free_port();
    let second = Target { client: first.client.clone(), base: format!("http://127.0.0.1:{port}") };
    let log = std::fs::File::create(dir.join("second.log")).expect("second log");
    let mut cmd = Command::new(server_binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(config_path)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .env("IDBRIDGE__SERVER__BIND", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
    let _second = ChildGuard(cmd.spawn().expect("spawn the second replica"));
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = second.client.get(format!("{}/readyz", second.base)).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the second replica did not start");
    const DEVICES: usize = 1000;
    let mut devices = Vec::with_capacity(DEVICES);
    for tok in mint(google, DEVICES, None) {
        let v = first.exchange(&tok).await.expect("sign-in for revocation");
        devices.push((field(&v, "access_token"), field(&v, "refresh_token")));
    }
    let queue = Arc::new(std::sync::Mutex::new(devices));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (queue, first, second) = (queue.clone(), first.clone(), second.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((access, refresh)) = next else { break };
                let started = Instant::now();
                let revoked = first
                    .client
                    .post(format!("{}/oauth/revoke", first.base))
                    .form(&[("token", refresh.as_str()), ("client_id", "app")])
                    .send()
                    .await;
                assert!(revoked.is_ok_and(|r| r.status() == 200), "revoke failed");
                loop {
                    let me =
                        second.client.get(format!("{}/v1/me", second.base)).bearer_auth(&access).send().await;
                    if me.is_ok_and(|r| r.status() == 401) {
                        break;
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(30),
                        "never refused on the second replica"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                latencies.push(started.elapsed());
            }
            latencies
        }));
    }
    let mut all: Vec<Duration> = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("revocation task"));
    }
    all.sort();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    println!(
        "revocation on one replica seen by another ({} revocations, c=16): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        all.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        all.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
}

/// The binary under test: this build's, or `LOAD_BIN`.
fn server_binary() -> String {
    std::env::var("LOAD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_idbridge").to_string())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

async fn run() {
    let backend = env_or("LOAD_DB", "sqlite");
    let secs: u64 = env_or("LOAD_SECS", "10").parse().expect("LOAD_SECS: seconds");
    let first_guess: f64 = env_or("LOAD_MINT_RATE", "1500").parse().expect("LOAD_MINT_RATE");
    let window = Duration::from_secs(secs);
    let dir = tempfile::tempdir().expect("tempdir");
    println!("idbridge load: backend={backend}, {secs}s per scenario, concurrency {CONCURRENCIES:?}");

    let google = Arc::new(FakeGoogle::start().await);

    // Database (guard declared before the child guard: the child is killed first).
    let mut _pg_guard: Option<PgDbGuard> = None;
    let db_url = match backend.as_str() {
        "sqlite" => format!("sqlite://{}", dir.path().join("load.db").display()),
        "postgres" => {
            let server = std::env::var("LOAD_PG_URL")
                .or_else(|_| std::env::var("IDBRIDGE_TEST_PG_URL"))
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
                .trim_end_matches('/')
                .to_string();
            let name = format!("idbridge_load_{}", uuid::Uuid::new_v4().simple());
            let mut c = PgConnection::establish(&format!("{server}/postgres"))
                .unwrap_or_else(|e| panic!("Postgres at {server}: {e}"));
            c.batch_execute(&format!("CREATE DATABASE {name}")).expect("CREATE DATABASE");
            let url = format!("{server}/{name}");
            _pg_guard = Some(PgDbGuard { server, name });
            url
        }
        other => panic!("LOAD_DB must be sqlite or postgres, not {other}"),
    };

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let master_key = write_master_key(dir.path());
    let config = format!(
        r#"[server]
bind = "127.0.0.1:{port}"
public_url = "{base}"

[database]
url = "{db_url}"
max_connections = 16

[keys]
master_keys = ["file:{master_key}"]
access_token_alg = "ES256"

[tokens]
audience = "{base}/api"
access_ttl = "30m"
refresh_idle_ttl = "30d"
refresh_max_ttl = "90d"
refresh_reuse_grace = "10s"

[providers.google]
client_ids = ["google-client-1", "google-client-2"]
issuer = "{issuer}"
require_nonce = false
hosted_domain = ""

[[clients]]
client_id = "app"
kind = "public"
redirect_uris = ["com.example.app:/cb"]
scopes = ["openid", "profile", "api"]

[[clients]]
client_id = "svc"
kind = "confidential"
secret_hash = "{hash}"
redirect_uris = []
scopes = ["api"]

[[clients]]
client_id = "svc-legacy"
kind = "confidential"
secret_hash = "{legacy_hash}"
redirect_uris = []
scopes = ["api"]

# Throughput is measured without rate limits (one load generator, one address).
[rate_limits]
per_ip_per_second = 0
per_client_per_second = 0
"#,
        master_key = master_key.display(),
        issuer = google.issuer(),
        hash = idbridge::clients::hash_secret("svc-secret"),
        legacy_hash = argon2_hash("svc-secret"),
    );
    let config_path = dir.path().join("idbridge.toml");
    std::fs::write(&config_path, config).expect("write config");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("server log");

    let mut cmd = Command::new(server_binary());
    cmd.arg("serve")
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
    for (k, _) in std::env::vars() {
        if k.starts_with("IDBRIDGE") {
            cmd.env_remove(k);
        }
    }
    let mut child = ChildGuard(cmd.spawn().expect("spawn idbridge"));
    let pid = child.0.id();

    // reqwest is built with rustls but without a default crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let target = Target { client: client.clone(), base: base.clone() };

    // Wait for readiness: bounded polling (this is a bench, not a test).
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "idbridge exited during start ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "idbridge not ready after 60 s:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // Returning users: register them once, untimed.
    let returning: Arc<Vec<String>> =
        Arc::new((0..RETURNING_USERS).map(|_| fake_google::random_sub()).collect());
    {
        let tokens = Arc::new(TokenPool {
            tokens: mint(&google, RETURNING_USERS, Some(returning.as_slice())),
            next: AtomicUsize::new(0),
        });
        let t = target.clone();
        let r = drive("(warm-up) register", Duration::from_secs(600), vec![(); 16], move |()| {
            let (t, tokens) = (t.clone(), tokens.clone());
            async move {
                match tokens.take() {
                    None => ((), Step::Exhausted),
                    Some(tok) => match t.exchange(tok).await {
                        Ok(_) => ((), Step::Ok),
                        Err(_) => ((), Step::Err),
                    },
                }
            }
        })
        .await;
        r.print();
    }

    if let Ok(soak_secs) = std::env::var("LOAD_SOAK_SECS") {
        let soak_secs: u64 = soak_secs.parse().expect("LOAD_SOAK_SECS: seconds");
        let fault = match _pg_guard.as_ref() {
            Some(_) => soak::Fault::PgTerminate(db_url.clone()),
            None => soak::Fault::SqliteWriteLock(db_url.trim_start_matches("sqlite://").to_string()),
        };
        soak::run(target.clone(), google.clone(), &returning, pid, fault, soak_secs).await;
        return;
    }

    let mut reports: Vec<Report> = Vec::new();
    let mut rate: HashMap<&'static str, f64> = HashMap::new();
    let mint_count = |rate: Option<&f64>, conc: usize| -> usize {
        let r = rate.map(|r| r * 1.5).unwrap_or(first_guess).clamp(200.0, 8000.0);
        (r * secs as f64) as usize + conc
    };

    // LOAD_ONLY=a,c runs only those scenarios (for profiling one of them).
    let want = |tag: &str| std::env::var("LOAD_ONLY").map_or(true, |only| only.split(',').any(|t| t == tag));
    for conc in CONCURRENCIES {
        println!("-- concurrency {conc}");

        // (a) token exchange, new users
        if want("a") {
            let n = mint_count(rate.get("exchange-new"), conc);
            let pool = Arc::new(TokenPool { tokens: mint(&google, n, None), next: AtomicUsize::new(0) });
            let t = target.clone();
            let r = drive("(a) exchange new user", window, vec![(); conc], move |()| {
                let (t, pool) = (t.clone(), pool.clone());
                async move {
                    match pool.take() {
                        None => ((), Step::Exhausted),
                        Some(tok) => match t.exchange(tok).await {
                            Ok(_) => ((), Step::Ok),
                            Err(_) => ((), Step::Err),
                        },
                    }
                }
            })
            .await;
            rate.insert("exchange-new", r.rps());
            r.print();
            reports.push(r);
        }

        // (b) token exchange, returning users
        if want("b") {
            let n = mint_count(rate.get("exchange-returning"), conc);
            let pool = Arc::new(TokenPool {
                tokens: mint(&google, n, Some(returning.as_slice())),
                next: AtomicUsize::new(0),
            });
            let t = target.clone();
            let r = drive("(b) exchange returning", window, vec![(); conc], move |()| {
                let (t, pool) = (t.clone(), pool.clone());
                async move {
                    match pool.take() {
                        None => ((), Step::Exhausted),
                        Some(tok) => match t.exchange(tok).await {
                            Ok(_) => ((), Step::Ok),
                            Err(_) => ((), Step::Err),
                        },
                    }
                }
            })
            .await;
            rate.insert("exchange-returning", r.rps());
            r.print();
            reports.push(r);
        }

        // (c) refresh chains: each task signs in once, then refreshes its own chain.
        if want("c") {
            let spares =
                Arc::new(TokenPool { tokens: mint(&google, conc * 3, None), next: AtomicUsize::new(0) });
            let mut chains = Vec::new();
            for _ in 0..conc {
                let tok = spares.take().expect("spare token");
                let v = target.exchange(tok).await.expect("sign-in for refresh chain");
                chains.push(Some(field(&v, "refresh_token")));
            }
            let t = target.clone();
            let r = drive("(c) refresh chain", window, chains, move |chain: Option<String>| {
                let (t, spares) = (t.clone(), spares.clone());
                async move {
                    // A broken chain (after an error) signs in again, untimed as a refresh.
                    let rt = match chain {
                        Some(rt) => rt,
                        None => match spares.take() {
                            None => return (None, Step::Exhausted),
                            Some(tok) => match t.exchange(tok).await {
                                Ok(v) => field(&v, "refresh_token"),
                                Err(_) => return (None, Step::Err),
                            },
                        },
                    };
                    match t.refresh(&rt).await {
                        Ok(v) => (Some(field(&v, "refresh_token")), Step::Ok),
                        Err(_) => (None, Step::Err),
                    }
                }
            })
            .await;
            r.print();
            reports.push(r);
        }

        // (d) introspection of one live access token by the confidential client
        if want("d") {
            let tok = google.id_token(serde_json::json!({}));
            let v = target.exchange(&tok).await.expect("sign-in for introspection");
            let access = Arc::new(field(&v, "access_token"));
            let t = target.clone();
            let r = drive("(d) introspect", window, vec![(); conc], move |()| {
                let (t, access) = (t.clone(), access.clone());
                async move {
                    let res = t
                        .client
                        .post(format!("{}/oauth/introspect", t.base))
                        .basic_auth("svc", Some("svc-secret"))
                        .form(&[("token", access.as_str())])
                        .send()
                        .await;
                    let ok = match res {
                        Ok(r) if r.status() == 200 => match r.json::<serde_json::Value>().await {
                            Ok(b) => b["active"] == serde_json::json!(true),
                            Err(_) => false,
                        },
                        _ => false,
                    };
                    ((), if ok { Step::Ok } else { Step::Err })
                }
            })
            .await;
            r.print();
            reports.push(r);
        }

        // (g) POST /v1/crypto/decrypt of 1 KiB as the user (Bearer), key cached after the first
        if want("g") {
            let tok = google.id_token(serde_json::json!({}));
            let v = target.exchange(&tok).await.expect("sign-in for decryption");
            let access = Arc::new(field(&v, "access_token"));
            let plaintext = base64::engine::general_purpose::STANDARD.encode(vec![0x5a_u8; 1024]);
            let sealed: serde_json::Value = target
                .client
                .post(format!("{}/v1/crypto/encrypt", target.base))
                .bearer_auth(access.as_str())
                .json(&serde_json::json!({"plaintext": plaintext, "context": "bench"}))
                .send()
                .await
                .expect("encrypt")
                .json()
                .await
                .expect("encrypt answer");
            let body = Arc::new(serde_json::json!({"ciphertext": sealed["ciphertext"], "context": "bench"}));
            let t = target.clone();
            let r = drive("(g) crypto/decrypt 1KiB", window, vec![(); conc], move |()| {
                let (t, access, body) = (t.clone(), access.clone(), body.clone());
                async move {
                    let res = t
                        .client
                        .post(format!("{}/v1/crypto/decrypt", t.base))
                        .bearer_auth(access.as_str())
                        .json(body.as_ref())
                        .send()
                        .await;
                    let ok = match res {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    ((), if ok { Step::Ok } else { Step::Err })
                }
            })
            .await;
            r.print();
            reports.push(r);
        }

        // (h) GET /v1/me with the user's access token (liveness from memory, profile from the database)
        if want("h") {
            let tok = google.id_token(serde_json::json!({}));
            let v = target.exchange(&tok).await.expect("sign-in for /v1/me");
            let access = Arc::new(field(&v, "access_token"));
            let t = target.clone();
            let r = drive("(h) GET /v1/me", window, vec![(); conc], move |()| {
                let (t, access) = (t.clone(), access.clone());
                async move {
                    let ok = match t
                        .client
                        .get(format!("{}/v1/me", t.base))
                        .bearer_auth(access.as_str())
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    ((), if ok { Step::Ok } else { Step::Err })
                }
            })
            .await;
            r.print();
            reports.push(r);
        }

        // (i) DPoP refresh chains and (j) GET /v1/me with DPoP proofs: the Bearer ones are (c), (h)
        if want("i") {
            let r = dpop::refresh_chains(&target, &google, conc, window).await;
            r.print();
            reports.push(r);
        }
        if want("j") {
            let r = dpop::me(&target, &google, conc, window).await;
            r.print();
            reports.push(r);
        }

        // (e) JWKS
        if want("e") {
            let t = target.clone();
            let r = drive("(e) GET jwks.json", window, vec![(); conc], move |()| {
                let t = t.clone();
                async move {
                    let ok = match t.client.get(format!("{}/.well-known/jwks.json", t.base)).send().await {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    ((), if ok { Step::Ok } else { Step::Err })
                }
            })
            .await;
            r.print();
            reports.push(r);
        }
    }

    if let Some(kib) = vm_hwm_kib(pid) {
        println!("server peak RSS before the attack scenarios: {:.1} MiB", kib as f64 / 1024.0);
    }
    // (f) a legitimate confidential call while a flood of wrong secrets arrives
    let attackers: usize = env_or("LOAD_ATTACKERS", "1000").parse().expect("LOAD_ATTACKERS");
    let full = std::env::var("LOAD_ONLY").is_err();
    if full {
        let tok = google.id_token(serde_json::json!({}));
        let v = target.exchange(&tok).await.expect("sign-in for the attack scenario");
        let access = Arc::new(field(&v, "access_token"));
        for (scenario, client_id) in
            [("(f) introspect, attacked", "svc"), ("(f') same, argon2 client", "svc-legacy")]
        {
            println!("-- {attackers} tasks sending wrong secrets for {client_id}");
            let attack = attack(&target, client_id, attackers, window);
            // The legitimate caller runs on a thread and runtime of its own, so the 1,000
            // attacking tasks of this process do not delay it on the client side.
            let (base, access) = (target.base.clone(), access.clone());
            let legit = tokio::task::spawn_blocking(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let client = reqwest::Client::builder().build().expect("client");
                    let t = Target { client, base };
                    drive(scenario, window, vec![(); 1], move |()| {
                        let (t, access) = (t.clone(), access.clone());
                        async move {
                            let res = t
                                .client
                                .post(format!("{}/oauth/introspect", t.base))
                                .basic_auth(client_id, Some("svc-secret"))
                                .form(&[("token", access.as_str())])
                                .send()
                                .await;
                            let ok = match res {
                                Ok(r) if r.status() == 200 => {
                                    r.json::<serde_json::Value>().await.is_ok_and(|b| b["active"] == true)
                                }
                                _ => false,
                            };
                            ((), if ok { Step::Ok } else { Step::Err })
                        }
                    })
                    .await
                })
            });
            let (statuses, legit) = tokio::join!(attack, legit);
            let legit = legit.expect("legitimate caller");
            legit.print();
            println!("   attack answers: {statuses:?}");
            if let Some(kib) = vm_hwm_kib(pid) {
                println!("   server peak RSS so far: {:.1} MiB", kib as f64 / 1024.0);
            }
            reports.push(legit);
        }
    }

    println!("\n== summary (backend {backend}) ==");
    for r in &reports {
        r.print();
    }
    match vm_hwm_kib(pid) {
        Some(kib) => println!("server peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("server peak RSS: /proc/{pid}/status not readable"),
    }

    if backend == "postgres" && full {
        for (name, script, what) in [
            ("refresh_one_device", PGBENCH_SCRIPT, "all clients on one device"),
            ("refresh_per_client", PGBENCH_SCRIPT_PER_CLIENT, "one device per client"),
        ] {
            let url = db_url.clone();
            let d = dir.path().to_path_buf();
            let tps = tokio::task::spawn_blocking(move || run_pgbench(&url, &d, secs, name, script))
                .await
                .ok()
                .flatten();
            match tps {
                Some(tps) => {
                    println!("pgbench refresh SQL ({what}; -c 16 -j 2 -T {secs}): tps = {tps:.1}");
                    for r in reports.iter().filter(|r| r.scenario.starts_with("(c)")) {
                        println!(
                            "  refresh req/s at c={} / pgbench tps = {:.1} / {:.1} = {:.2}",
                            r.conc,
                            r.rps(),
                            tps,
                            r.rps() / tps
                        );
                    }
                }
                None => println!("pgbench ({what}): no result"),
            }
        }
    }

    if backend == "postgres" {
        // pgbench's own TPC-B-like load without branch/teller updates (-N), in the same run.
        let server = db_url.rsplit_once('/').map(|(s, _)| s.to_string()).unwrap_or_default();
        let d = dir.path().to_path_buf();
        let tps = tokio::task::spawn_blocking(move || run_pgbench_n(&server, &d, secs)).await.ok().flatten();
        match tps {
            Some(tps) => {
                println!("pgbench -N -c 16 -j 2 -T {secs} (scale 1): tps = {tps:.1}");
                for r in reports.iter().filter(|r| r.conc == 16) {
                    println!(
                        "  {:<28} c=16: {:>8.1} req/s = {:.2}x pgbench -N",
                        r.scenario,
                        r.rps(),
                        r.rps() / tps
                    );
                }
            }
            None => println!("pgbench -N: no result"),
        }
        if full {
            revocation_propagation(&google, &target, &config_path, dir.path()).await;
        }
    }

    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        println!("\n{errors} request errors; last server log lines:");
        for l in tail.into_iter().rev() {
            println!("  {l}");
        }
    }
    drop(child);
}
