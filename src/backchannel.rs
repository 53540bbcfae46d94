//! OpenID Connect Back-Channel Logout 1.0, the sending half: the notices `sessions::
//! logout_notices` stores in every transaction that ends a device are POSTed here, after the
//! commit, as `logout_token=<JWT>` to the client's `backchannel_logout_uri`.
//!
//! - At least once: a notice goes only once the receiver answered 2xx; a failure or an answer
//!   slower than 5 s is retried with exponential back-off and jitter for 24 hours, then given
//!   up (audited and counted). Notices live in the database, so a restart loses none.
//! - One sender per notice: a replica claims it before sending (see `claim_due`).
//! - A receiver that is down slows nothing else: sending happens on its own task, at most
//!   [`CONCURRENCY`] at a time, never inside a revocation's transaction.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::audit::{self, Actor, AuditAction, AuditEvent, Origin};
use crate::clients::ClientRegistry;
use crate::crypto::signing::SigningKeys;
use crate::db::{Db, DbError};
use crate::metrics::Metrics;
use crate::sessions::liveness::{REVOKED, REVOKED_ELSEWHERE};
use crate::sessions::logout_notices::{self, Notice};

/// Deliveries in flight at once.
pub const CONCURRENCY: usize = 8;
/// A receiver gets this long to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Notices claimed per round: as many as are sent at once, so each is sent well within its claim.
const BATCH: i64 = CONCURRENCY as i64;
/// The longest the sender sleeps without being woken, should a wake-up be lost. Retries wake it
/// when they are due; revocations on any replica wake it at once (the `revoked` notice; on
/// PostgreSQL through `LISTEN`), and on SQLite those of the command line (the watcher).
const POLL_SECS: i64 = 30;

/// What the sender needs.
#[derive(Clone)]
pub struct Sender {
    pub db: Db,
    pub keys: Arc<SigningKeys>,
    pub clients: Arc<ClientRegistry>,
    pub metrics: Arc<Metrics>,
    pub issuer: String,
    pub http: reqwest::Client,
}

/// The HTTP client for receivers: 5 s in all, no redirects. (The TLS provider is installed by
/// `app` before anything builds a client.)
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("idbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

/// Sends notices until the process ends: at once after a revocation commits on this replica
/// (its `revoked` notice), else when the next retry is due, and at least every few seconds.
pub fn spawn(sender: Sender) -> tokio::task::JoinHandle<()> {
    let subscribers = sender.db.subscribers().clone();
    crate::db::notify::spawn_woken(&subscribers, &[REVOKED, REVOKED_ELSEWHERE], POLL_SECS, move || {
        let sender = sender.clone();
        async move {
            sender
                .deliver_due()
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "cannot look for back-channel logout notices"))
                .unwrap_or(None)
        }
    })
}

/// How one delivery went.
enum Outcome {
    Delivered,
    NoUri,
    Failed,
}

impl Sender {
    /// Delivers every due notice (claimed first); returns when the next one is due.
    pub async fn deliver_due(&self) -> Result<Option<i64>, DbError> {
        // A read first: an idle replica never writes.
        let next = self.db.run(logout_notices::next_due).await?;
        if next.is_none_or(|at| at > crate::clock::now()) {
            return Ok(next);
        }
        loop {
            let claimed =
                self.db.write(|conn| logout_notices::claim_due(conn, crate::clock::now(), BATCH)).await?;
            if claimed.is_empty() {
                break;
            }
            let results: Vec<Result<(), DbError>> = futures_util::stream::iter(claimed)
                .map(|notice| self.deliver(notice))
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            results.into_iter().collect::<Result<(), DbError>>()?;
        }
        self.db.run(logout_notices::next_due).await
    }

    async fn deliver(&self, notice: Notice) -> Result<(), DbError> {
        let outcome = self.send(&notice).await;
        let now = crate::clock::now();
        let label = match outcome {
            Outcome::Delivered | Outcome::NoUri => {
                let id = notice.device_id.clone();
                self.db.write(move |conn| logout_notices::done(conn, &id)).await?;
                if matches!(outcome, Outcome::Delivered) {
                    "delivered"
                } else {
                    "no_uri"
                }
            }
            Outcome::Failed if now - notice.created_at >= logout_notices::GIVE_UP_AFTER_SECS => {
                tracing::error!(client_id = %notice.client_id, attempts = notice.attempts + 1,
                    "a back-channel logout could not be delivered for 24 hours; given up");
                let detail = format!("client={}; attempts={}", notice.client_id, notice.attempts + 1);
                self.db
                    .write(move |conn| {
                        let event = AuditEvent {
                            actor: &Actor::System,
                            action: AuditAction::BackchannelLogoutFailed,
                            user_id: Some(&notice.user_id),
                            device_id: Some(&notice.device_id),
                            detail: Some(&detail),
                        };
                        audit::record(conn, event, &Origin::default(), now)?;
                        logout_notices::done(conn, &notice.device_id)
                    })
                    .await?;
                "given_up"
            }
            Outcome::Failed => {
                let jitter = f64::from(crate::crypto::random_bytes::<1>()[0]) / 255.0;
                self.db.write(move |conn| logout_notices::retry_later(conn, &notice, now, jitter)).await?;
                "failed"
            }
        };
        self.metrics.backchannel_logouts.with_label_values(&[label]).inc();
        Ok(())
    }

    /// POSTs the logout token; never logs it or the receiver's answer body.
    async fn send(&self, notice: &Notice) -> Outcome {
        let Some(uri) = self.clients.get(&notice.client_id).and_then(|c| c.backchannel_logout_uri.clone())
        else {
            return Outcome::NoUri;
        };
        let token = match crate::tokens::logout::issue(
            &self.keys,
            &self.issuer,
            &notice.client_id,
            &notice.user_id,
            &notice.device_id,
            crate::clock::now(),
        ) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign a logout token");
                return Outcome::Failed;
            }
        };
        let sent = self.http.post(&uri).form(&[("logout_token", token.as_str())]).send().await;
        match sent {
            Ok(answer) if answer.status().is_success() => Outcome::Delivered,
            Ok(answer) => {
                tracing::warn!(client_id = %notice.client_id, status = answer.status().as_u16(),
                    "a back-channel logout receiver refused; will retry");
                Outcome::Failed
            }
            Err(e) => {
                tracing::warn!(client_id = %notice.client_id, cause = %crate::providers::jwks::error_chain(&e.without_url()),
                    "a back-channel logout receiver cannot be reached; will retry");
                Outcome::Failed
            }
        }
    }
}
