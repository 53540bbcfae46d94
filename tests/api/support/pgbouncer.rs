//! A real PgBouncer (Debian's package) in transaction mode in front of the test PostgreSQL,
//! started once per test process on a free port and stopped when the process exits. Every
//! database of the server is reachable through it.

use std::sync::OnceLock;

use super::test_db::pg_server_url;

struct Running {
    port: u16,
    /// Stopped by `stop_bouncer` when the test process exits.
    _child: std::process::Child,
    _dir: tempfile::TempDir,
}

static BOUNCER: OnceLock<Option<Running>> = OnceLock::new();
static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn stop_bouncer() {
    let pid = PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: a plain kill(2) of the child this process started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if let Some(Some(running)) = BOUNCER.get() {
        let _ = std::fs::remove_dir_all(running._dir.path());
    }
}

/// The URL of database `name` through PgBouncer; `None` when PgBouncer is not installed
/// (`.ci/run` installs it; under CI its absence fails the test instead).
pub fn url_for(name: &str) -> Option<String> {
    let running = BOUNCER.get_or_init(start).as_ref()?;
    let server = url::Url::parse(&pg_server_url()).expect("the test PostgreSQL URL");
    let user = if server.username().is_empty() { "postgres" } else { server.username() };
    Some(format!("postgres://{user}@127.0.0.1:{}/{name}", running.port))
}

fn start() -> Option<Running> {
    let binary =
        ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(binary) = binary else {
        assert!(std::env::var_os("CI").is_none(), "PgBouncer is not installed (.ci/run installs it)");
        eprintln!("SKIPPED: PgBouncer is not installed; the PgBouncer variants of the tests do not run");
        return None;
    };
    let server = url::Url::parse(&pg_server_url()).expect("the test PostgreSQL URL");
    let (host, pg_port) =
        (server.host_str().unwrap_or("127.0.0.1").to_string(), server.port().unwrap_or(5432));
    let user =
        if server.username().is_empty() { "postgres".to_string() } else { server.username().to_string() };
    let port = super::free_port();
    let dir = tempfile::tempdir().expect("tempdir for PgBouncer");
    let ini = dir.path().join("pgbouncer.ini");
    let users = dir.path().join("userlist.txt");
    std::fs::write(&users, format!("\"{user}\" \"\"\n")).expect("userlist");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host={host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n\
             unix_socket_dir =\nauth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
             max_client_conn = 2000\ndefault_pool_size = 40\nserver_reset_query =\nlogfile = {log}\n\
             query_wait_timeout = 5\n\
             pidfile = {pid}\nadmin_users = {user}\n",
            users = users.display(),
            log = dir.path().join("pgbouncer.log").display(),
            pid = dir.path().join("pgbouncer.pid").display(),
        ),
    )
    .expect("pgbouncer.ini");
    // PgBouncer will not run as root: hand the folder to the postgres user and run as it.
    let _ = std::process::Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
    let mut command = std::process::Command::new(binary);
    command.arg(&ini).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
    command.stderr(std::process::Stdio::null());
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        command.arg("-u").arg("postgres");
    }
    let child = command.spawn().expect("start PgBouncer");
    PID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: registers a plain extern "C" function, run when the test process exits.
    unsafe {
        libc::atexit(stop_bouncer);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "PgBouncer did not start listening on {port}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(Running { port, _child: child, _dir: dir })
}
