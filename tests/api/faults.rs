//! Faults that production brings, injected on the real databases: a refresh stalled behind a
//! lock longer than the reuse grace, a statement past `statement_timeout`, writes stalled
//! while `/readyz` is asked, and (SQLite, where this machine can mount a small filesystem) a
//! full disk. Each checks that an answer tells the truth (503 means nothing was committed) and
//! that a client that follows the protocol keeps its device.

use serde_json::json;

use crate::support::private_pg;

use crate::support::*;

/// Backends waiting on a lock in this app's PostgreSQL database.
async fn lock_waiters(app: &TestApp) -> i64 {
    app.count("pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()").await
}

/// Holds what a refresh of `device_id` must lock: the device row (PostgreSQL), or SQLite's
/// write lock.
async fn stall_refreshes_of(app: &TestApp, device_id: &str) -> test_db::HeldTransaction {
    match app.db.backend {
        Backend::Postgres | Backend::PgBouncer => {
            app.hold(&format!("SELECT 1 FROM devices WHERE id = '{device_id}' FOR UPDATE")).await
        }
        Backend::Sqlite => app.hold("").await,
    }
}

/// A refresh that waited longer than the grace for the database, then committed; the client
/// lost the answer and retries at once. The grace counts from the commit, on the database's
/// clock: the retry gets the same successor and the device lives.
async fn an_honest_retry_after_a_stalled_refresh_gets_the_same_successor(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.refresh_reuse_grace = "2s".into()).await;
    let signed = app.sign_in().await;
    let stall = stall_refreshes_of(&app, &signed.device_id).await;

    let stalled = app.refresh(&signed.refresh_token);
    let fault = async {
        if backend == Backend::Postgres {
            eventually("the refresh waits for the device's lock", || async { lock_waiters(&app).await > 0 })
                .await;
        }
        // The fault: the database holds the refresh up for longer than the grace.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        stall.release();
    };
    let (first, ()) = tokio::join!(stalled, fault);
    first.assert_status(200);

    let retry = app.refresh(&signed.refresh_token).await;

    retry.assert_status(200);
    assert_eq!(retry.str("refresh_token"), first.str("refresh_token"), "the same successor");
    app.refresh(retry.str("refresh_token")).await.assert_status(200);
}
both_backends!(an_honest_retry_after_a_stalled_refresh_gets_the_same_successor);

/// PostgreSQL cancels a statement that runs past `statement_timeout`: the answer is 503 with
/// Retry-After, nothing was committed, and the same refresh token works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_past_statement_timeout_is_503_and_commits_nothing() {
    let app = spawn_app_with(Backend::Postgres, |c| c.statement_timeout = "1s".into()).await;
    let signed = app.sign_in().await;
    let stall = stall_refreshes_of(&app, &signed.device_id).await;

    let cancelled = app.refresh(&signed.refresh_token).await;

    cancelled.assert_oauth_error(503, "temporarily_unavailable");
    assert!(cancelled.header("retry-after").is_some(), "{:?}", cancelled.headers);
    stall.release();
    assert_eq!(app.count("refresh_tokens WHERE spent_at IS NOT NULL").await, 0, "nothing was spent");
    app.refresh(&signed.refresh_token).await.assert_status(200);
}

/// While writes cannot go through, `/readyz` says so (within its second) instead of hanging
/// or answering 200; once they can, it is ready again.
async fn readyz_says_not_ready_while_writes_stall(backend: Backend) {
    let app = spawn_app(backend).await;
    app.get("/readyz").await.assert_status(200);
    let stall = match backend {
        Backend::Postgres | Backend::PgBouncer => {
            app.hold("SELECT 1 FROM server_state WHERE name = 'readiness_probe' FOR UPDATE").await
        }
        Backend::Sqlite => app.hold("").await,
    };

    let stalled = tokio::time::timeout(std::time::Duration::from_secs(5), app.get("/readyz"))
        .await
        .expect("/readyz answers while the database stalls");

    stalled.assert_status(503);
    assert_eq!(stalled.body["writes"], json!(false), "{}", stalled.text);
    assert!(stalled.header("retry-after").is_some());
    stall.release();
    eventually("ready again", || async { app.get("/readyz").await.status.as_u16() == 200 }).await;
}
both_backends!(readyz_says_not_ready_while_writes_stall);

/// A small filesystem of our own for a SQLite database (tmpfs); `None` where mounting is not
/// allowed (the test then says it was skipped).
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    fn mount(size: &str) -> Option<SmallFilesystem> {
        let dir = tempfile::tempdir().ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallFilesystem { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes zeros into a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).expect("create filler");
        let block = vec![0u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let single = [0u8; 1];
        while file.write_all(&single).is_ok() {}
        filler
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// SQLite on a full disk: every write is 503 with Retry-After (never 500), `/readyz` says the
/// database takes no writes (also for a server started on the full disk), and once space is
/// freed, writes work again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_503_and_not_ready_and_recovers() {
    let Some(fs) = SmallFilesystem::mount("4m") else {
        eprintln!("SKIPPED a_full_disk_is_503_and_not_ready_and_recovers: this machine cannot mount a tmpfs");
        return;
    };
    let base = spawn_app(Backend::Sqlite).await;
    let db_url = format!("sqlite://{}/data/idbridge.db", fs.path().display());
    let toml = base.config_text().replace(&base.db.url, &db_url);
    let app = base.start_with_toml(&toml).await;
    app.sign_in_as("before-full").await;
    let filler = fs.fill();

    let mut refused = 0;
    for n in 0..20 {
        let a = app.exchange(&app.google.id_token_for(&format!("during-full-{n}")), &[]).await;
        match a.status.as_u16() {
            200 => {}
            503 => {
                a.assert_oauth_error(503, "temporarily_unavailable");
                assert!(a.header("retry-after").is_some(), "503 without Retry-After");
                refused += 1;
            }
            other => panic!("a full disk answered {other}: {}", a.text),
        }
    }
    assert!(refused > 0, "20 new users on a full disk, and none refused");
    let ready = app.get("/readyz").await;
    ready.assert_status(503);
    assert_eq!(ready.body["writes"], json!(false), "{}", ready.text);
    let started_full = app.start_with_toml(&toml).await;
    started_full.get("/readyz").await.assert_status(503);

    std::fs::remove_file(&filler).expect("free the space");

    app.sign_in_as("after-full").await;
    eventually("ready once there is space", || async { app.get("/readyz").await.status.as_u16() == 200 })
        .await;
}

/// What one honest client saw.
#[derive(Default)]
struct ClientLog {
    refreshed: usize,
    retried: usize,
    lost: Vec<String>,
}

/// Sixteen honest clients refresh in a loop against a PostgreSQL cluster of the test's own,
/// which is stopped (as by a crash) and later frozen (SIGSTOP) for longer than the clients'
/// timeout. A client that gets no answer, a timeout or a 503 presents the same token again, as
/// the protocol says; none may lose its device, and no answer may be a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_clients_keep_their_devices_when_postgres_stops_or_freezes() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let Some(pg) = tokio::task::spawn_blocking(private_pg::PrivatePg::start).await.unwrap() else {
        eprintln!(
            "SKIPPED honest_clients_keep_their_devices…: PostgreSQL's server programs are not installed"
        );
        return;
    };
    let pg = std::sync::Arc::new(pg);
    // The freeze (5 s) outlasts the reuse grace (3 s): a grace counted from the request's start
    // would turn every retry of a refresh caught in it into reuse.
    let base = spawn_app_with(Backend::Postgres, |c| {
        c.statement_timeout = "2s".into();
        c.refresh_reuse_grace = "3s".into();
        c.per_ip_per_second = 0;
    })
    .await;
    let app = base.start_with_toml(&base.config_text().replace(&base.db.url, &pg.url())).await;
    let mut devices = Vec::new();
    for n in 0..16 {
        devices.push(app.sign_in_as(&format!("fault-{n}")).await);
    }
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build().unwrap();
    let done = AtomicBool::new(false);
    let refreshed = AtomicUsize::new(0);

    let client = |first: String| {
        let (http, url, done, refreshed) = (http.clone(), app.url("/oauth/token"), &done, &refreshed);
        async move {
            let mut log = ClientLog::default();
            let mut token = first;
            // A request left without an answer is retried at once even after the run ends: a
            // client that stopped then would come back with a token its grace no longer covers.
            let mut unanswered = false;
            while unanswered || !done.load(Ordering::SeqCst) {
                unanswered = false;
                match refresh_attempt(&http, &url, &token).await {
                    Attempt::Rotated(next) => {
                        token = next;
                        log.refreshed += 1;
                        refreshed.fetch_add(1, Ordering::SeqCst);
                    }
                    Attempt::Unavailable(answer) => {
                        assert!(answer.header("retry-after").is_some(), "503 without Retry-After");
                        log.retried += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Attempt::Lost(why) => {
                        log.lost.push(why);
                        break;
                    }
                    // No answer in time: the same token again, as the protocol says.
                    Attempt::NoAnswer => {
                        log.retried += 1;
                        unanswered = true;
                    }
                }
            }
            (log, token)
        }
    };
    let progress = |at_least: usize| {
        let refreshed = &refreshed;
        async move {
            eventually("the clients refresh", || async move { refreshed.load(Ordering::SeqCst) >= at_least })
                .await
        }
    };
    let faults = async {
        progress(32).await;
        tokio::task::spawn_blocking({
            let pg = pg.clone();
            move || pg.stop()
        })
        .await
        .unwrap();
        // The faults' own lengths: a crash and a restart 3 s later, then a freeze of 5 s.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tokio::task::spawn_blocking({
            let pg = pg.clone();
            move || pg.start_again()
        })
        .await
        .unwrap();
        let after_restart = refreshed.load(Ordering::SeqCst);
        progress(after_restart + 32).await;
        pg.freeze();
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        pg.thaw();
        let after_thaw = refreshed.load(Ordering::SeqCst);
        progress(after_thaw + 32).await;
        done.store(true, Ordering::SeqCst);
    };
    let clients = futures_util::future::join_all(devices.iter().map(|d| client(d.refresh_token.clone())));
    let (logs, ()) = tokio::join!(clients, faults);

    let lost: Vec<&String> = logs.iter().flat_map(|(log, _)| &log.lost).collect();
    assert!(lost.is_empty(), "honest clients lost their devices: {lost:?}");
    let retried: usize = logs.iter().map(|(log, _)| log.retried).sum();
    assert!(retried > 0, "the faults never reached a client");
    for (_, token) in &logs {
        // As a client would: a 503 (a pooled connection found dead after the crash) is retried.
        let mut answer = app.refresh(token).await;
        for _ in 0..10 {
            if answer.status.as_u16() != 503 {
                break;
            }
            answer = app.refresh(token).await;
        }
        answer.assert_status(200);
    }
    let private = test_db::TestDb::attach(Backend::Postgres, &pg.url());
    let revoked =
        tokio::task::spawn_blocking(move || private.count_blocking("devices WHERE revoked_at IS NOT NULL"));
    assert_eq!(revoked.await.unwrap(), 0, "no device was revoked");
}

/// Clients refresh against an `idbridge serve` process that is killed (`kill -9`, so answers in
/// flight are lost after their commit) and started again at once. Every client retries its
/// last token; a refresh that committed without an answer is retried within the grace and gets
/// its successor; no device is lost.
async fn honest_clients_keep_their_devices_across_a_kill_9(backend: Backend) {
    use crate::support::server_process::start_replica;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let base = spawn_app_with(backend, |c| c.per_ip_per_second = 0).await;
    let config = base.dir().join("serve.toml");
    std::fs::write(&config, base.config_text()).unwrap();
    let port = free_port();
    let server = std::sync::Mutex::new(Some(start_replica(&config, port)));
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build().unwrap();
    let token_url = format!("http://127.0.0.1:{port}/oauth/token");
    let mut firsts = Vec::new();
    for n in 0..16 {
        let id_token = base.google.id_token_for(&format!("killed-{n}"));
        let form = [
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", id_token.as_str()),
            ("subject_token_type", ID_TOKEN_TYPE),
            ("client_id", "app"),
        ];
        let signed = Answer::read(http.post(&token_url).form(&form).send().await.unwrap()).await;
        firsts.push(signed.str("refresh_token").to_string());
    }
    let (done, refreshed) = (AtomicBool::new(false), AtomicUsize::new(0));

    let client = |first: String| {
        let (http, url, done, refreshed) = (http.clone(), token_url.clone(), &done, &refreshed);
        async move {
            let (mut token, mut lost) = (first, None);
            // An attempt without a clear answer is retried even after the run ends (see above).
            let mut unanswered = false;
            while (unanswered || !done.load(Ordering::SeqCst)) && lost.is_none() {
                unanswered = false;
                match refresh_attempt(&http, &url, &token).await {
                    Attempt::Rotated(next) => {
                        token = next;
                        refreshed.fetch_add(1, Ordering::SeqCst);
                    }
                    Attempt::Lost(why) => lost = Some(why),
                    // Unavailable, refused or cut off while the server is down: the same token again.
                    Attempt::Unavailable(_) | Attempt::NoAnswer => {
                        unanswered = true;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await
                    }
                }
            }
            (lost, token)
        }
    };
    let kill_and_restart = async {
        for _ in 0..2 {
            let before = refreshed.load(Ordering::SeqCst);
            eventually("the clients refresh", || async { refreshed.load(Ordering::SeqCst) >= before + 32 })
                .await;
            if let Some(running) = server.lock().unwrap().take() {
                running.kill();
            }
            let config = config.clone();
            let restarted = tokio::task::spawn_blocking(move || start_replica(&config, port)).await.unwrap();
            *server.lock().unwrap() = Some(restarted);
        }
        let before = refreshed.load(Ordering::SeqCst);
        eventually("the clients refresh after the restart", || async {
            refreshed.load(Ordering::SeqCst) >= before + 32
        })
        .await;
        done.store(true, Ordering::SeqCst);
    };
    let clients = futures_util::future::join_all(firsts.into_iter().map(client));
    let (outcomes, ()) = tokio::join!(clients, kill_and_restart);

    let lost: Vec<&String> = outcomes.iter().filter_map(|(lost, _)| lost.as_ref()).collect();
    assert!(lost.is_empty(), "honest clients lost their devices: {lost:?}");
    assert_eq!(base.count("devices WHERE revoked_at IS NOT NULL").await, 0, "no device was revoked");
}
both_backends!(honest_clients_keep_their_devices_across_a_kill_9);

/// What one refresh by an honest client came to.
enum Attempt {
    /// 200: the successor to present next.
    Rotated(String),
    /// 503: nothing happened; the same token again later.
    Unavailable(Answer),
    /// No answer (refused, cut off, timed out): the same token again.
    NoAnswer,
    /// Any other answer: the client lost its device.
    Lost(String),
}

async fn refresh_attempt(http: &reqwest::Client, url: &str, token: &str) -> Attempt {
    let form = [("grant_type", "refresh_token"), ("refresh_token", token), ("client_id", "app")];
    let Ok(response) = http.post(url).form(&form).send().await else {
        return Attempt::NoAnswer;
    };
    let answer = Answer::read(response).await;
    match answer.status.as_u16() {
        200 => Attempt::Rotated(answer.str("refresh_token").to_string()),
        503 => Attempt::Unavailable(answer),
        _ => Attempt::Lost(format!("{} {}", answer.status, answer.text)),
    }
}
