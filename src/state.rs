//! `AppState`: what every handler shares. Its own module, so `app` (which builds it) and
//! `http` (which reads it) do not import each other.

use std::sync::Arc;

use crate::clients::ClientRegistry;
use crate::config::Settings;
use crate::crypto::signing::SigningKeys;
use crate::db::Db;
use crate::http::limits::RateLimits;
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::tokens::access::AccessTokenPolicy;
use crate::tokens::nonce::NonceKey;
use crate::tokens::refresh::{SessionPolicy, SuccessorKey};

pub struct AppState {
    pub settings: Settings,
    pub db: Db,
    pub keys: Arc<SigningKeys>,
    pub providers: Providers,
    pub clients: ClientRegistry,
    pub access_policy: AccessTokenPolicy,
    pub session_policy: SessionPolicy,
    pub successor_key: SuccessorKey,
    pub nonce_key: NonceKey,
    pub metrics: Arc<Metrics>,
    pub rate_limits: Arc<RateLimits>,
}

impl AppState {
    pub fn google_requires_nonce(&self) -> bool {
        self.settings.providers.google.as_ref().is_some_and(|g| g.require_nonce)
    }
}
