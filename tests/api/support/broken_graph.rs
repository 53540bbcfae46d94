//! A Graph API on loopback that misbehaves as told: hangs, answers 500, or answers something
//! that is not JSON.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Misbehaviour {
    Hang = 0,
    ServerError = 1,
    NotJson = 2,
}

/// A Graph API on loopback that misbehaves as told.
pub struct BrokenGraph {
    mode: Arc<AtomicU8>,
    connections: Arc<AtomicUsize>,
    pub base_url: String,
}

impl BrokenGraph {
    pub async fn start() -> BrokenGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://127.0.0.1:{}/v21.0", listener.local_addr().unwrap().port());
        let mode = Arc::new(AtomicU8::new(Misbehaviour::Hang as u8));
        let connections = Arc::new(AtomicUsize::new(0));
        let (serving, counted) = (mode.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mode = serving.load(Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = [0u8; 8192];
                    let _ = socket.read(&mut request).await;
                    let answer: &[u8] = match mode {
                        m if m == Misbehaviour::ServerError as u8 => {
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        }
                        m if m == Misbehaviour::NotJson as u8 => {
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\nconnection: close\r\n\r\nnot json!"
                        }
                        // Hang: hold the connection, say nothing, until the client gives up.
                        _ => {
                            let _ = socket.read(&mut request).await;
                            return;
                        }
                    };
                    let _ = socket.write_all(answer).await;
                });
            }
        });
        BrokenGraph { mode, connections, base_url }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set(&self, mode: Misbehaviour) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}
