//! `AppState`: what every handler and use case shares. Its own module, so `app` (which
//! builds it), `service` and `http` (which read it) do not import each other.

use std::sync::Arc;

use crate::clients::ClientRegistry;
use crate::config::Settings;
use crate::crypto::blind_index::BlindIndex;
use crate::crypto::signing::SigningKeys;
use crate::crypto::user_keys::UserKeys;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::proof_replay::ProofReplay;
use crate::providers::Providers;
use crate::rate_limits::RateLimits;
use crate::sessions::{self, Liveness, SuccessorKey};
use crate::tokens::access::AccessTokenPolicy;
use crate::tokens::dpop::DpopNonces;
use crate::tokens::nonce::NonceKey;

pub struct AppState {
    pub settings: Settings,
    pub db: Db,
    pub keys: Arc<SigningKeys>,
    pub providers: Providers,
    pub clients: Arc<ClientRegistry>,
    pub access_policy: AccessTokenPolicy,
    pub session_policy: sessions::Policy,
    pub successor_key: SuccessorKey,
    pub nonce_key: NonceKey,
    pub user_keys: Arc<UserKeys>,
    pub blind_index: Arc<BlindIndex>,
    pub metrics: Arc<Metrics>,
    pub rate_limits: Arc<RateLimits>,
    /// Devices revoked recently: every access-token check reads this, not the database.
    pub liveness: Arc<Liveness>,
    /// DPoP server nonces (`tokens.dpop_nonce`).
    pub dpop_nonces: DpopNonces,
    /// The `jti`s of DPoP proofs accepted in the last minutes.
    pub proof_replay: ProofReplay,
    /// The audit chain's key (`audit_chain`), and how far this replica has verified it.
    pub audit_key: Arc<crate::crypto::server_secrets::ServerSecret>,
    pub audit_verified: crate::audit_chain::Verified,
    /// The OpenAPI document, made on first use (`http::openapi::document`).
    pub openapi: std::sync::OnceLock<String>,
}

impl AppState {
    /// The keys a sign-in uses.
    pub fn sign_in_keys(&self) -> crate::accounts::Keys<'_> {
        crate::accounts::Keys {
            nonces: &self.nonce_key,
            user_keys: &self.user_keys,
            blind_index: &self.blind_index,
        }
    }

    pub fn google_requires_nonce(&self) -> bool {
        self.settings.providers.google.as_ref().is_some_and(|g| g.require_nonce)
    }
}
