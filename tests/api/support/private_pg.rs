//! A PostgreSQL cluster of a test's own (initdb into a temp folder, its own port), so the test
//! may stop it, kill it or freeze it (SIGSTOP) without touching anyone else's database.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

/// Runs `program args` as the postgres user (PostgreSQL will not run as root).
fn as_postgres(program: &Path, args: &[&str]) -> bool {
    let mut command = if unsafe { libc::getuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    command.status().is_ok_and(|s| s.success())
}

impl PrivatePg {
    /// A new cluster, started; `None` where PostgreSQL's server programs are not installed.
    pub fn start() -> Option<PrivatePg> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())?;
        let dir = tempfile::tempdir().expect("tempdir for a private cluster");
        let _ = Command::new("chown").arg("-R").arg("postgres").arg(dir.path()).status();
        let data = dir.path().join("data");
        let data_arg = data.display().to_string();
        assert!(
            as_postgres(
                &bin.join("initdb"),
                &["-D", &data_arg, "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            "initdb failed"
        );
        let cluster = PrivatePg { dir, bin, port: super::free_port() };
        cluster.start_again();
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster (again) and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        assert!(
            as_postgres(
                &self.bin.join("pg_ctl"),
                &["-D", &self.data(), "-o", &options, "-l", &log, "-w", "start"]
            ),
            "pg_ctl start failed"
        );
    }

    /// Stops the cluster at once, as a crash would (`-m immediate`).
    pub fn stop(&self) {
        as_postgres(&self.bin.join("pg_ctl"), &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// The postmaster and every backend it forked.
    fn processes(&self) -> Vec<i32> {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let Some(postmaster) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|text| text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()))
        else {
            return Vec::new();
        };
        let children = Command::new("pgrep").arg("-P").arg(postmaster.to_string()).output();
        let mut pids = vec![postmaster];
        if let Ok(out) = children {
            pids.extend(
                String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse::<i32>().ok()),
            );
        }
        pids
    }

    fn signal(&self, signal: i32) {
        for pid in self.processes() {
            // SAFETY: kill(2) of the cluster's own processes.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Freezes every process of the cluster (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.thaw();
        self.stop();
    }
}
