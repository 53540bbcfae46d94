//! An app's back-channel logout endpoint on loopback: records every `logout_token` POSTed to
//! it, and can refuse (503) on purpose.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};

#[derive(Default)]
struct Shared {
    /// Every logout token received, with whether it was refused.
    received: Mutex<Vec<(String, bool)>>,
    seen: tokio::sync::Notify,
    failing: AtomicBool,
    refuse_next: AtomicUsize,
}

pub struct LogoutReceiver {
    shared: Arc<Shared>,
    handle: actix_web::dev::ServerHandle,
    pub uri: String,
}

impl Drop for LogoutReceiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl LogoutReceiver {
    pub async fn start() -> LogoutReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind receiver");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).route("/backchannel-logout", web::post().to(receive))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(0)
        .listen(listener)
        .expect("listen receiver")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        LogoutReceiver { shared, handle, uri: format!("http://127.0.0.1:{port}/backchannel-logout") }
    }

    /// Refuses every delivery (503) until told otherwise: a receiver that is down.
    pub fn set_failing(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// Refuses the next `n` deliveries.
    pub fn refuse_next(&self, n: usize) {
        self.shared.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Every request so far: (logout token, refused).
    pub fn received(&self) -> Vec<(String, bool)> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The logout tokens accepted so far.
    pub fn accepted(&self) -> Vec<String> {
        self.received().into_iter().filter(|(_, refused)| !refused).map(|(t, _)| t).collect()
    }

    /// Waits (10 s at most) until `count` requests came in all, accepted or not.
    pub async fn wait_for_requests(&self, count: usize) -> Vec<(String, bool)> {
        self.wait(|r| r.len() >= count).await
    }

    /// Waits (10 s at most) until `count` tokens were accepted.
    pub async fn wait_for_accepted(&self, count: usize) -> Vec<String> {
        self.wait_for_accepted_within(count, 10).await
    }

    /// Waits (`secs` at most) until `count` tokens were accepted.
    pub async fn wait_for_accepted_within(&self, count: usize, secs: u64) -> Vec<String> {
        self.wait_within(|r| r.iter().filter(|(_, refused)| !refused).count() >= count, secs).await;
        self.accepted()
    }

    async fn wait(&self, done: impl Fn(&[(String, bool)]) -> bool) -> Vec<(String, bool)> {
        self.wait_within(done, 10).await
    }

    async fn wait_within(&self, done: impl Fn(&[(String, bool)]) -> bool, secs: u64) -> Vec<(String, bool)> {
        let wait = async {
            loop {
                let seen = self.shared.seen.notified();
                if done(&self.received()) {
                    return self.received();
                }
                seen.await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(secs), wait)
            .await
            .unwrap_or_else(|_| panic!("the receiver got only {:?}", self.received()))
    }
}

async fn receive(shared: web::Data<Shared>, body: String) -> HttpResponse {
    let token = url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let refused = shared.failing.load(Ordering::SeqCst)
        || shared.refuse_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    shared.received.lock().unwrap().push((token, refused));
    shared.seen.notify_waiters();
    if refused {
        HttpResponse::ServiceUnavailable().finish()
    } else {
        HttpResponse::Ok().finish()
    }
}
