//! The soak run of the load benchmark (`LOAD_SOAK_SECS`, e.g. 3600): sixteen clients send mixed
//! traffic for that long (a device each: refresh chains, `GET /v1/me`, introspection, and a
//! sign-in now and then), following the protocol as a real app does (a 503 or no answer means
//! the same refresh token again). A sign-in is one turn in fifty (each makes a device). Every `LOAD_SOAK_FAULT_EVERY` seconds (default 60) a fault
//! is injected: on SQLite another process holds the write lock for 3 s; on PostgreSQL every
//! connection of idbridge is terminated. Every 10 s a row is printed: requests, 503s, other
//! errors, latency p50/p99 of that window, the server's RSS and open files, the pool, and how
//! many devices clients lost (must stay 0).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::{fake_google::FakeGoogle, field, Target};

/// How a fault is injected into the database under the server.
pub enum Fault {
    /// Hold SQLite's write lock from another connection.
    SqliteWriteLock(String),
    /// Terminate every connection to this PostgreSQL database (`pg_terminate_backend`).
    PgTerminate(String),
}

impl Fault {
    fn inject(&self) {
        match self {
            Fault::SqliteWriteLock(path) => {
                if let Ok(mut c) = SqliteConnection::establish(path) {
                    if c.batch_execute("PRAGMA busy_timeout = 5000; BEGIN IMMEDIATE").is_ok() {
                        std::thread::sleep(Duration::from_secs(3));
                        let _ = c.batch_execute("ROLLBACK");
                    }
                }
            }
            Fault::PgTerminate(url) => {
                if let Ok(mut c) = PgConnection::establish(url) {
                    let _ = c.batch_execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = current_database() AND pid <> pg_backend_pid()",
                    );
                }
            }
        }
    }
}

#[derive(Default)]
struct Window {
    latencies: Vec<Duration>,
    unavailable: u64,
    errors: u64,
}

struct Shared {
    window: Mutex<Window>,
    lost: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, started: Instant, status: Option<u16>) {
        let mut w = self.window.lock().unwrap();
        match status {
            Some(200) => w.latencies.push(started.elapsed()),
            Some(503) | None => w.unavailable += 1,
            Some(_) => w.errors += 1,
        }
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> Option<u16> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    Some(status)
}

/// One client: a device of its own, its refresh chain, its reads.
async fn client(target: Target, google: Arc<FakeGoogle>, sub: String, shared: Arc<Shared>) {
    let Ok(first) = target.exchange(&google.id_token_for(&sub)).await else { return };
    let (mut refresh, mut access) = (field(&first, "refresh_token"), field(&first, "access_token"));
    let mut turn = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        turn += 1;
        let started = Instant::now();
        match turn % 10 {
            0 if turn.is_multiple_of(50) => {
                let token = google.id_token_for(&sub);
                let status = match target.exchange(&token).await {
                    Ok(_) => Some(200),
                    Err(e) => e.split_whitespace().next().and_then(|s| s.parse().ok()),
                };
                shared.record(started, status);
            }
            1..=5 => {
                let answer = target
                    .client
                    .post(format!("{}/oauth/token", target.base))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", refresh.as_str()),
                        ("client_id", "app"),
                    ])
                    .send()
                    .await;
                let (status, body) = match answer {
                    Ok(r) => {
                        (Some(r.status().as_u16()), r.json::<serde_json::Value>().await.unwrap_or_default())
                    }
                    Err(_) => (None, serde_json::Value::Null),
                };
                shared.record(started, status);
                match status {
                    Some(200) => {
                        refresh = field(&body, "refresh_token");
                        access = field(&body, "access_token");
                    }
                    // Unavailable or no answer: the same token next turn, as the protocol says.
                    Some(503) | None => tokio::time::sleep(Duration::from_millis(100)).await,
                    Some(_) => {
                        shared.lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
            6..=8 => {
                let me = target.client.get(format!("{}/v1/me", target.base)).bearer_auth(&access);
                shared.record(started, status_of(me).await);
            }
            _ => {
                // Introspection (and the sign-in turn when it is not one).
                let introspect = target
                    .client
                    .post(format!("{}/oauth/introspect", target.base))
                    .basic_auth("svc", Some("svc-secret"))
                    .form(&[("token", access.as_str())]);
                shared.record(started, status_of(introspect).await);
            }
        }
    }
}

fn proc_value(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with(key))?.split_whitespace().nth(1)?.parse().ok()
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// `idle/in_use` from the server's `/metrics`.
async fn pool(target: &Target) -> String {
    let text = match target.client.get(format!("{}/metrics", target.base)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return "?".into(),
    };
    let value = |state: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("idbridge_db_pool_connections") && l.contains(&format!("state=\"{state}\""))
            })
            .and_then(|l| l.split_whitespace().last())
            .unwrap_or("?")
            .to_string()
    };
    format!("{}/{}", value("idle"), value("in_use"))
}

pub async fn run(
    target: Target,
    google: Arc<FakeGoogle>,
    subs: &[String],
    pid: u32,
    fault: Fault,
    secs: u64,
) {
    let every: u64 =
        super::env_or("LOAD_SOAK_FAULT_EVERY", "60").parse().expect("LOAD_SOAK_FAULT_EVERY: seconds");
    println!("soak: {secs} s of mixed traffic, 16 clients, a fault every {every} s");
    println!(
        "{:>6} {:>8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>6} {:>9} {:>5} {:>6}",
        "t(s)", "requests", "503", "errors", "p50", "p99", "RSS MiB", "fds", "pool i/u", "lost", "fault"
    );
    let shared = Arc::new(Shared {
        window: Mutex::new(Window::default()),
        lost: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let tasks: Vec<_> = subs
        .iter()
        .take(16)
        .map(|sub| tokio::spawn(client(target.clone(), google.clone(), sub.clone(), shared.clone())))
        .collect();
    let fault = Arc::new(fault);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    let mut next_fault = every;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        let t = started.elapsed().as_secs();
        let mut faulted = "";
        if t >= next_fault {
            next_fault += every;
            let fault = fault.clone();
            tokio::task::spawn_blocking(move || fault.inject());
            faulted = "yes";
        }
        let window = std::mem::take(&mut *shared.window.lock().unwrap());
        let mut latencies = window.latencies;
        latencies.sort();
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
        };
        println!(
            "{:>6} {:>8} {:>6} {:>6} {:>9.2?} {:>9.2?} {:>9.1} {:>6} {:>9} {:>5} {:>6}",
            t,
            latencies.len() as u64 + window.unavailable + window.errors,
            window.unavailable,
            window.errors,
            at(0.50).unwrap_or_default(),
            at(0.99).unwrap_or_default(),
            proc_value(pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
            open_files(pid),
            pool(&target).await,
            shared.lost.load(Ordering::Relaxed),
            faulted,
        );
    }
    shared.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "soak done: {} devices lost, peak RSS {:.1} MiB",
        shared.lost.load(Ordering::Relaxed),
        proc_value(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
}
