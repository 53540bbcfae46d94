//! `idbridge serve` as a process of its own (several replicas, a `kill -9`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// An `idbridge serve` process of its own.
pub struct Replica {
    child: Child,
    pub address: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    /// `kill -9`: no chance to answer what is in flight.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

/// Starts `idbridge serve` with `config`; returns once it says it listens.
pub fn start_replica(config: &std::path::Path, port: u16) -> Replica {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idbridge"));
    command.arg("serve").arg("--config").arg(config).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("IDBRIDGE") {
            command.env_remove(k);
        }
    }
    command.env("IDBRIDGE__SERVER__BIND", format!("127.0.0.1:{port}"));
    let mut child = command.spawn().expect("start idbridge serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    loop {
        let line = lines.next().expect("the replica exited before listening").expect("read its log");
        if line.contains("idbridge listening") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Replica { child, address: format!("http://127.0.0.1:{port}") }
}
