//! The client registry: lookup of configured, dev and console-made clients, client
//! authentication, and the argon2 workers and cache behind slow secret checks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use argon2::Block;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::secrets::{secret_digest, verify_argon2_in, SecretCheck};
use super::stored::list_stored;
use super::{dev_clients, Client, ClientKind, ADMIN_CALLBACK_PATH, ADMIN_CLIENT};
use crate::config::{ClientSettings, ConfigError, Settings};
use crate::db::{DbConnection, DbError};

/// Verified (and refused) argon2 secrets remembered per client, so argon2 runs once per secret.
const REMEMBERED_PER_CLIENT: usize = 8;
/// Argon2 verifications running at once (each takes ~19 MiB and one core).
const ARGON2_RUNNING: usize = 2;
/// Argon2 verifications that may wait for a turn; past this the answer is "busy".
const ARGON2_WAITING: usize = 8;

/// What a request presented: `client_id`, and a secret from HTTP Basic or the form.
pub struct ClientCredentials {
    pub client_id: String,
    pub secret: Option<SecretString>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClientAuthError {
    #[error("client authentication failed")]
    Failed,
    #[error("too many client secrets are being verified; retry shortly")]
    Busy,
}

/// Argon2 fingerprints already decided, per client.
#[derive(Default)]
struct Remembered {
    good: Vec<[u8; 32]>,
    bad: Vec<[u8; 32]>,
}

pub struct ClientRegistry {
    /// From `[[clients]]` (and dev mode): fixed for the life of the process.
    clients: HashMap<String, Arc<Client>>,
    /// Made in the admin console: stored in the database, reloaded every few seconds and
    /// whenever this replica changes one. Disabled ones are left out.
    stored: RwLock<Arc<HashMap<String, Arc<Client>>>>,
    admin: Arc<Client>,
    remembered: Mutex<HashMap<String, Remembered>>,
    argon2: Argon2Workers,
}

/// A verification for the argon2 workers, answered on `reply`.
struct Argon2Job {
    hash: String,
    secret: SecretString,
    reply: tokio::sync::oneshot::Sender<bool>,
}

/// A few threads of their own run argon2, fed by a bounded queue: a request that finds the
/// queue full is told to retry (503) instead of waiting behind a flood. Dedicated threads also
/// keep memory bounded: each verification allocates ~19 MiB, which the allocator keeps per
/// thread; on the runtime's many blocking threads a flood grew that past a gigabyte.
struct Argon2Workers {
    queue: std::sync::mpsc::SyncSender<Argon2Job>,
}

impl Argon2Workers {
    fn start() -> Self {
        let (queue, jobs) = std::sync::mpsc::sync_channel::<Argon2Job>(ARGON2_WAITING);
        let jobs = Arc::new(Mutex::new(jobs));
        for n in 0..ARGON2_RUNNING {
            let jobs = jobs.clone();
            let spawned = std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                // One working memory per thread, reused by every verification.
                let mut memory: Vec<Block> = Vec::new();
                loop {
                    let next = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(job) = next else { break };
                    let ok = verify_argon2_in(&job.hash, job.secret.expose_secret(), &mut memory);
                    let _ = job.reply.send(ok);
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start an argon2 thread");
            }
        }
        Self { queue }
    }

    async fn verify(&self, hash: String, secret: SecretString) -> Result<bool, ClientAuthError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue.try_send(Argon2Job { hash, secret, reply }).map_err(|_| ClientAuthError::Busy)?;
        answer.await.map_err(|_| ClientAuthError::Busy)
    }
}

impl ClientRegistry {
    /// The clients of `[[clients]]`, plus `dev-app` and `dev-service` in dev mode.
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let mut clients = HashMap::new();
        for (i, c) in settings.clients.iter().enumerate() {
            let client = client_from_settings(c).map_err(|message| ConfigError {
                key: format!("clients[{i}].secret_hash"),
                message: format!("client `{}`: {message}", c.client_id),
            })?;
            if matches!(client.secret, Some(SecretCheck::Argon2(_))) {
                tracing::warn!(
                    client_id = %c.client_id,
                    "this client's secret_hash is an argon2 hash: it verifies slowly, a few at a time; \
                     give the client a new secret from `idbridge clients new-secret`"
                );
            }
            clients.insert(c.client_id.clone(), Arc::new(client));
        }
        if settings.dev.enabled {
            for client in dev_clients() {
                clients.entry(client.id.clone()).or_insert_with(|| Arc::new(client));
            }
        }
        let admin = Arc::new(Client {
            id: ADMIN_CLIENT.into(),
            kind: ClientKind::Public,
            secret: None,
            redirect_uris: vec![format!("{}{ADMIN_CALLBACK_PATH}", settings.issuer())],
            scopes: vec!["openid".into()],
            backchannel_logout_uri: None,
            post_logout_redirect_uris: Vec::new(),
            dpop_required: false,
        });
        Ok(Self {
            clients,
            stored: RwLock::new(Arc::new(HashMap::new())),
            admin,
            remembered: Mutex::new(HashMap::new()),
            argon2: Argon2Workers::start(),
        })
    }

    /// A client by id: from the configuration, then those made in the admin console, then the
    /// console itself (which only `/oauth/authorize` meets).
    pub fn get(&self, client_id: &str) -> Option<Arc<Client>> {
        if let Some(client) = self.clients.get(client_id) {
            return Some(client.clone());
        }
        if let Some(client) = self.stored_snapshot().get(client_id) {
            return Some(client.clone());
        }
        (client_id == ADMIN_CLIENT).then(|| self.admin.clone())
    }

    /// `true` for a client id of the configuration (or dev mode), which the console cannot reuse.
    pub fn is_configured(&self, client_id: &str) -> bool {
        self.clients.contains_key(client_id) || client_id == ADMIN_CLIENT
    }

    fn stored_snapshot(&self) -> Arc<HashMap<String, Arc<Client>>> {
        self.stored.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Every client that apps use (configured and stored), for discovery.
    pub fn all(&self) -> Vec<Arc<Client>> {
        let mut all: Vec<Arc<Client>> = self.clients.values().cloned().collect();
        all.extend(self.stored_snapshot().values().cloned());
        all
    }

    /// The clients of the configuration (and dev mode), sorted by id, for the admin console.
    pub fn configured(&self) -> Vec<Arc<Client>> {
        let mut list: Vec<Arc<Client>> = self.clients.values().cloned().collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// Reads the enabled clients made in the admin console. A row whose secret hash does not
    /// parse is left out (and logged), never half-loaded.
    pub fn reload_stored(&self, conn: &mut DbConnection) -> Result<(), DbError> {
        let rows = list_stored(conn)?;
        let mut stored = HashMap::new();
        for row in rows.into_iter().filter(|r| r.disabled_at.is_none()) {
            if self.clients.contains_key(&row.client_id) || row.client_id == ADMIN_CLIENT {
                continue;
            }
            match row.to_client() {
                Some(client) => {
                    stored.insert(client.id.clone(), Arc::new(client));
                }
                None => tracing::error!(client_id = %row.client_id, "a stored client is malformed; left out"),
            }
        }
        *self.stored.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(stored);
        Ok(())
    }

    /// A public client is known by its id; a confidential one must prove its secret. The admin
    /// console's client is not known here.
    pub async fn authenticate(&self, credentials: ClientCredentials) -> Result<Arc<Client>, ClientAuthError> {
        if credentials.client_id == ADMIN_CLIENT {
            return Err(ClientAuthError::Failed);
        }
        let client = self.get(&credentials.client_id).ok_or(ClientAuthError::Failed)?;
        if client.kind == ClientKind::Public {
            return Ok(client);
        }
        let secret = credentials.secret.ok_or(ClientAuthError::Failed)?;
        let ok = match client.secret.as_ref().ok_or(ClientAuthError::Failed)? {
            SecretCheck::Sha256(expected) => {
                bool::from(secret_digest(secret.expose_secret()).ct_eq(expected))
            }
            SecretCheck::Argon2(hash) => self.verify_argon2(&client.id, hash, secret).await?,
        };
        if ok {
            Ok(client)
        } else {
            Err(ClientAuthError::Failed)
        }
    }

    /// The argon2 `secret_hash` of a client made in the console before console secrets were
    /// stored as SHA-256 (see [`upgrade_stored_secret`](super::upgrade_stored_secret)).
    pub fn stored_argon2_hash(&self, client_id: &str) -> Option<String> {
        match self.stored_snapshot().get(client_id)?.secret.as_ref()? {
            SecretCheck::Argon2(hash) => Some(hash.clone()),
            SecretCheck::Sha256(_) => None,
        }
    }

    /// `true` when checking these credentials would run argon2 (an older configuration's
    /// hash, for a secret not already decided): the caller counts the attempt against its
    /// address before the hash runs.
    pub fn needs_slow_check(&self, credentials: &ClientCredentials) -> bool {
        let Some(client) = self.get(&credentials.client_id) else { return false };
        let (Some(SecretCheck::Argon2(hash)), Some(secret)) = (&client.secret, &credentials.secret) else {
            return false;
        };
        self.recall(&client.id, &argon2_fingerprint(&client.id, hash, secret)).is_none()
    }

    async fn verify_argon2(
        &self,
        client_id: &str,
        hash: &str,
        secret: SecretString,
    ) -> Result<bool, ClientAuthError> {
        let fingerprint = argon2_fingerprint(client_id, hash, &secret);
        if let Some(known) = self.recall(client_id, &fingerprint) {
            return Ok(known);
        }
        let ok = self.argon2.verify(hash.to_string(), secret).await?;
        self.remember(client_id, fingerprint, ok);
        Ok(ok)
    }

    fn recall(&self, client_id: &str, fingerprint: &[u8; 32]) -> Option<bool> {
        let remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        let entry = remembered.get(client_id)?;
        let known = |list: &[[u8; 32]]| list.iter().any(|k| bool::from(k.ct_eq(fingerprint)));
        if known(&entry.good) {
            Some(true)
        } else if known(&entry.bad) {
            Some(false)
        } else {
            None
        }
    }

    fn remember(&self, client_id: &str, fingerprint: [u8; 32], ok: bool) {
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        let entry = remembered.entry(client_id.to_string()).or_default();
        let list = if ok { &mut entry.good } else { &mut entry.bad };
        if list.len() >= REMEMBERED_PER_CLIENT {
            list.remove(0);
        }
        list.push(fingerprint);
    }
}

/// What an argon2 verification is remembered by. The hash is part of it: a client made again
/// under the same id (new hash) never inherits what its predecessor's secret proved.
fn argon2_fingerprint(client_id: &str, hash: &str, secret: &SecretString) -> [u8; 32] {
    Sha256::new()
        .chain_update(client_id.as_bytes())
        .chain_update([0])
        .chain_update(hash.as_bytes())
        .chain_update([0])
        .chain_update(secret.expose_secret().as_bytes())
        .finalize()
        .into()
}

fn client_from_settings(c: &ClientSettings) -> Result<Client, String> {
    let secret = match c.kind {
        ClientKind::Public => None,
        ClientKind::Confidential => Some(SecretCheck::parse(&c.secret_hash).ok_or_else(|| {
            "secret_hash must be the output of `idbridge clients new-secret` or `clients hash-secret`"
                .to_string()
        })?),
    };
    Ok(Client {
        id: c.client_id.clone(),
        kind: c.kind,
        secret,
        redirect_uris: c.redirect_uris.clone(),
        scopes: c.scopes.clone(),
        backchannel_logout_uri: Some(c.backchannel_logout_uri.clone()).filter(|u| !u.is_empty()),
        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
        dpop_required: c.dpop_required,
    })
}
