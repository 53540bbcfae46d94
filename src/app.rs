//! `Application::build(Settings)`: the running server. `main`, the tests and the benchmarks
//! all start idbridge through here.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{middleware, web, App, HttpServer};

use crate::accounts::profile;
use crate::clients::ClientRegistry;
use crate::config::{ConfigError, Settings};
use crate::crypto::blind_index::BlindIndex;
use crate::crypto::keyring::{create_key_file_if_missing, KeyringError, MasterKeyring};
use crate::crypto::server_secrets::{self, ServerSecret, ServerSecretError};
use crate::crypto::signing::{SigningError, SigningKeys};
use crate::crypto::user_keys::UserKeys;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::rate_limits::RateLimits;
use crate::sessions::{self, Liveness, SuccessorKey};
use crate::state::AppState;
use crate::tokens::access::AccessTokenPolicy;
use crate::tokens::nonce::NonceKey;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting that only shows itself wrong at start (a client's `secret_hash`, dev mode's bind).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The database cannot be reached at all: a bad `database.url` or a server that is down.
    #[error("cannot connect to the database: {0}")]
    Unreachable(String),
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    ServerSecret(#[from] ServerSecretError),
    /// Stored keys are wrapped by a master key the keyring lacks.
    #[error("master key {id} still wraps {count} stored keys but is not in the keyring; add it back (`keys rotate-master` moves them to the first key)")]
    MasterKeyMissing { id: String, count: i64 },
    #[error("signing keys: {0}")]
    Signing(#[from] SigningError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("cannot create the master key file {0}: {1}")]
    MasterKeyFile(String, std::io::Error),
}

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// The keyring, creating missing `file:` keys first in dev mode.
pub fn load_keyring(settings: &Settings) -> Result<MasterKeyring, StartError> {
    if settings.dev.enabled {
        for path in settings.keys.master_keys.iter().filter_map(|s| s.strip_prefix("file:")) {
            match create_key_file_if_missing(std::path::Path::new(path)) {
                Ok(true) => tracing::info!(%path, "dev mode: created a new master key"),
                Ok(false) => {}
                Err(e) => return Err(StartError::MasterKeyFile(path.to_string(), e)),
            }
        }
    }
    Ok(MasterKeyring::load(&settings.keys.master_keys)?)
}

/// Opens the pool and, when asked, applies migrations (under the PostgreSQL advisory lock).
pub async fn open_database(settings: &Settings, migrate: bool) -> Result<Db, StartError> {
    let db = Db::with_options(&settings.database.url, settings.database.options())
        .map_err(StartError::Database)?;
    let checker = db.clone();
    tokio::task::spawn_blocking(move || checker.check_reachable())
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
        .map_err(StartError::Unreachable)?;
    if migrate {
        let migrator = db.clone();
        let applied = tokio::task::spawn_blocking(move || migrator.migrate())
            .await
            .map_err(|e| StartError::Database(e.to_string()))?
            .map_err(StartError::Database)?;
        if applied > 0 {
            tracing::info!(applied, "migrations applied");
        }
    }
    Ok(db)
}

/// The signing keys, with a first key made when there is none.
pub async fn load_signing_keys(
    settings: &Settings,
    db: &Db,
    keyring: Arc<MasterKeyring>,
) -> Result<Arc<SigningKeys>, StartError> {
    let keys = Arc::new(SigningKeys::new(
        keyring,
        settings.keys.access_token_alg,
        settings.tokens.access_ttl.as_secs() as i64,
        settings.keys.signing_key_rotation.as_secs() as i64,
    ));
    let k = keys.clone();
    db.write(move |conn| k.ensure_initial_key(conn, crate::clock::now())).await?;
    let k = keys.clone();
    db.run(move |conn| k.reload(conn)).await?;
    Ok(keys)
}

/// Refuses to start when stored keys are wrapped by a master key that is not in the keyring.
pub async fn check_master_keys_in_use(db: &Db, keyring: &MasterKeyring) -> Result<(), StartError> {
    let usage = db.run(crate::crypto::wrapped_key_usage).await?;
    let known = keyring.key_ids();
    match usage.into_iter().find(|(id, _)| !known.contains(id)) {
        Some((id, count)) => Err(StartError::MasterKeyMissing { id, count }),
        None => Ok(()),
    }
}

/// Encrypts, in batches, the personal data of users written before per-user keys.
pub async fn encrypt_existing_users(
    db: &Db,
    keys: Arc<UserKeys>,
    index: Arc<BlindIndex>,
) -> Result<usize, StartError> {
    let mut moved = 0;
    loop {
        let (k, i) = (keys.clone(), index.clone());
        let n =
            db.write(move |conn| profile::encrypt_existing(conn, &k, &i, 500, crate::clock::now())).await?;
        if n == 0 {
            break;
        }
        moved += n;
        tracing::info!(moved, "personal data of existing users encrypted");
    }
    Ok(moved)
}

/// The server secret for `name`, made on first use by any replica.
pub async fn load_server_secret(
    db: &Db,
    keyring: Arc<MasterKeyring>,
    name: &'static str,
) -> Result<ServerSecret, StartError> {
    Ok(db.write(move |conn| server_secrets::load_or_create(conn, &keyring, name)).await?)
}

/// Makes aws-lc-rs the process's TLS crypto provider (reqwest is built without a default one).
/// Idempotent; anything else that builds a reqwest client before `Application::build` calls it.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The HTTP client for providers: bounded time, no redirects.
pub fn provider_http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .connect_timeout(std::time::Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("idbridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is static and valid")
}

impl Application {
    pub async fn build(mut settings: Settings) -> Result<Application, StartError> {
        if settings.dev.enabled {
            settings.enable_dev()?;
        }
        let clients = Arc::new(ClientRegistry::from_settings(&settings)?);
        let keyring = Arc::new(load_keyring(&settings)?);
        let db = open_database(&settings, settings.database.auto_migrate).await?;
        // Before any write that may revoke (`apply_session_max` below).
        let liveness = Arc::new(Liveness::default());
        liveness.follow(db.subscribers());
        check_master_keys_in_use(&db, &keyring).await?;
        let keys = load_signing_keys(&settings, &db, keyring.clone()).await?;
        let successor_key =
            load_server_secret(&db, keyring.clone(), server_secrets::REFRESH_SUCCESSOR).await?;
        let nonce_key = load_server_secret(&db, keyring.clone(), server_secrets::NONCE).await?;
        let blind_index = load_server_secret(&db, keyring.clone(), server_secrets::EMAIL_BLIND_INDEX).await?;
        let audit_key =
            Arc::new(load_server_secret(&db, keyring.clone(), server_secrets::AUDIT_CHAIN).await?);
        let user_keys = Arc::new(UserKeys::new(keyring.clone()));
        let blind_index = Arc::new(BlindIndex(blind_index));
        encrypt_existing_users(&db, user_keys.clone(), blind_index.clone()).await?;
        {
            let registry = clients.clone();
            db.run(move |conn| registry.reload_stored(conn)).await?;
        }
        {
            let max_ttl = settings.tokens.refresh_max_ttl.as_secs() as i64;
            let shortened = db
                .write(move |conn| sessions::devices::apply_session_max(conn, max_ttl, crate::clock::now()))
                .await?;
            if shortened > 0 {
                tracing::info!(
                    devices = shortened,
                    "sessions shortened to the current tokens.refresh_max_ttl"
                );
            }
        }
        {
            let (liveness, ttl) = (liveness.clone(), settings.tokens.access_ttl.as_secs() as i64);
            db.write(move |conn| liveness.adopt_access_ttl(conn, ttl)).await?;
        }
        {
            let liveness = liveness.clone();
            db.run(move |conn| liveness.load(conn, crate::clock::now())).await?;
        }
        let metrics = Arc::new(Metrics::new());
        let rate_limits = Arc::new(RateLimits::new(&settings.rate_limits));

        let providers = Providers::new(&settings, provider_http_client(), metrics.clone())?;
        let providers_apple = providers.apple.clone();
        let metrics_for_background = metrics.clone();
        let state = web::Data::new(AppState {
            providers,
            clients: clients.clone(),
            access_policy: AccessTokenPolicy {
                issuer: settings.issuer().to_string(),
                audience: settings.audience().to_string(),
                ttl_secs: settings.tokens.access_ttl.as_secs() as i64,
            },
            session_policy: sessions::Policy {
                idle_ttl_secs: settings.tokens.refresh_idle_ttl.as_secs() as i64,
                max_ttl_secs: settings.tokens.refresh_max_ttl.as_secs() as i64,
                reuse_grace_secs: settings.tokens.refresh_reuse_grace.as_secs() as i64,
                max_devices_per_user: i64::from(settings.tokens.max_devices_per_user),
            },
            successor_key: SuccessorKey(successor_key),
            dpop_nonces: crate::tokens::dpop::DpopNonces::new(&nonce_key),
            proof_replay: crate::proof_replay::ProofReplay::default(),
            openapi: std::sync::OnceLock::new(),
            audit_key: audit_key.clone(),
            audit_verified: Default::default(),
            nonce_key: NonceKey(nonce_key),
            user_keys: user_keys.clone(),
            blind_index: blind_index.clone(),
            metrics,
            rate_limits: rate_limits.clone(),
            liveness: liveness.clone(),
            keys: keys.clone(),
            db: db.clone(),
            settings,
        });

        let state_settings = state.settings.clone();
        let bind = state.settings.server.bind.clone();
        let listener = TcpListener::bind(&bind).map_err(|e| StartError::Bind(bind.clone(), e))?;
        let port = listener.local_addr().map_err(|e| StartError::Bind(bind.clone(), e))?.port();
        let dev_enabled = state.settings.dev.enabled;
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(middleware::from_fn(crate::http::log_request))
                .configure(|cfg| crate::http::routes(cfg, dev_enabled))
        })
        // Requests in flight get 25 s to finish; the process then exits within the 30 s the
        // README promises, even with threads still waiting on a stalled database (see main).
        .shutdown_timeout(25)
        .listen(listener)
        .map_err(|e| StartError::Bind(bind.clone(), e))?
        .run();
        tracing::info!(%bind, port, dev = dev_enabled, "idbridge listening");
        let retention = crate::housekeeping::Retention::from_settings(&state_settings);
        let apple = providers_apple.map(|apple| (apple, keyring.clone()));
        let logouts = crate::backchannel::Sender {
            db: db.clone(),
            keys: keys.clone(),
            clients: clients.clone(),
            metrics: metrics_for_background,
            issuer: state_settings.issuer().to_string(),
            http: crate::backchannel::http_client(),
        };
        let background = crate::housekeeping::spawn(crate::housekeeping::Background {
            db,
            keys,
            rate_limits,
            clients,
            liveness,
            retention,
            apple,
            logouts,
            audit_key,
            user_keys,
            blind_index,
        });
        Ok(Application { port, server, background })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGTERM or SIGINT, then drains the requests in flight.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        result
    }
}

impl From<crate::db::DbError> for StartError {
    fn from(e: crate::db::DbError) -> Self {
        StartError::Database(e.to_string())
    }
}
