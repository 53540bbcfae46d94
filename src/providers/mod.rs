//! Identity providers behind one entry point: an ID token goes in, a verified
//! `(provider, subject)` comes out. Google, every `[[providers.oidc]]` entry and the dev
//! provider are OpenID Connect issuers checked by [`oidc::OidcVerifier`]; which one verifies a
//! token is told by its `iss`.

pub mod apple;
pub mod dev;
pub mod events;
pub mod facebook;
pub mod jwks;
pub mod oidc;
pub mod upstream;

use std::sync::Arc;

use crate::config::{ConfigError, Settings};
use crate::metrics::Metrics;
use oidc::{IdTokenPolicy, KeySource, OidcVerifier};

/// The issuers idbridge accepts ID tokens from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Google,
    Facebook,
    Apple,
    Dev,
    /// A `[[providers.oidc]]` entry, by its configured name (see [`Providers::kind`]).
    Oidc(&'static str),
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Google => "google",
            ProviderKind::Facebook => "facebook",
            ProviderKind::Apple => "apple",
            ProviderKind::Dev => "dev",
            ProviderKind::Oidc(name) => name,
        }
    }

    /// The provider a stored row names (a login or code in flight, written by this service):
    /// a built-in one, else a `[[providers.oidc]]` name. Such names are kept once for the
    /// life of the process (they come from the configuration, so there are few).
    pub fn from_stored(name: &str) -> Option<Self> {
        static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        if let Some(kind) = Self::parse(name) {
            return Some(kind);
        }
        if name.is_empty() || name.len() > 32 {
            return None;
        }
        let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
        let interned = match names.iter().find(|n| **n == name) {
            Some(n) => *n,
            None => {
                let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
                names.push(leaked);
                leaked
            }
        };
        Some(ProviderKind::Oidc(interned))
    }

    /// A built-in provider's name; a configured one's is known to [`Providers::kind`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "google" => Some(ProviderKind::Google),
            "facebook" => Some(ProviderKind::Facebook),
            "apple" => Some(ProviderKind::Apple),
            "dev" => Some(ProviderKind::Dev),
            _ => None,
        }
    }
}

/// What a provider vouched for. `nonce` is the token's claim, checked by the caller against
/// the request and the nonce store.
#[derive(Debug, Clone)]
pub struct VerifiedAssertion {
    pub provider: ProviderKind,
    pub subject: String,
    pub email: Option<String>,
    /// Whether the provider says it verified `email` (`None`: it did not say).
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub nonce: Option<String>,
    /// SHA-256 of the signed part of an ID token: its single-use record. `None` for an
    /// assertion that may come again (a Facebook access token, valid until Facebook says not).
    pub assertion_hash: Option<String>,
    /// After this the assertion is expired anyway and its single-use record can go.
    pub expires_at: i64,
    /// The ID token's audience (the app's client id at the provider), when it had one.
    pub audience: Option<String>,
    /// What the provider gave idbridge to keep (Apple's refresh token, from a redeemed code).
    pub upstream: Option<UpstreamGrant>,
}

/// A token a provider issued to idbridge at sign-in, kept wrapped for the user
/// (`accounts::provider_tokens`): Sign in with Apple's refresh token, revoked when the account
/// is deleted. `Debug` never shows the token.
#[derive(Debug, Clone)]
pub struct UpstreamGrant {
    /// The client id the token was issued to (a bundle id or Services ID).
    pub client_id: String,
    pub refresh_token: secrecy::SecretString,
}

/// Why an assertion was refused. The text is safe to show the client: it never quotes the token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AssertionError {
    #[error("the subject_token is not a well-formed JWT")]
    Malformed,
    #[error("the subject_token's issuer is not accepted")]
    UnknownIssuer,
    #[error("the subject_token was not issued by the requested provider")]
    ProviderMismatch,
    #[error("the subject_token's algorithm is not allowed")]
    Algorithm,
    #[error("the subject_token has a critical header extension that is not understood")]
    CriticalHeader,
    #[error("the subject_token is signed by an unknown key")]
    UnknownKey,
    #[error("the subject_token's signature is invalid")]
    Signature,
    #[error("the subject_token's audience is not accepted")]
    Audience,
    #[error("the subject_token's authorized party is not accepted")]
    AuthorizedParty,
    #[error("the subject_token has expired")]
    Expired,
    #[error("the subject_token is not valid yet")]
    NotYetValid,
    #[error("the subject_token was issued in the future")]
    IssuedInFuture,
    #[error("the subject_token's hosted domain is not accepted")]
    HostedDomain,
    #[error("the subject_token lacks the `{0}` claim")]
    MissingClaim(String),
    #[error("the subject_token's `{0}` claim is malformed or too long")]
    BadClaim(&'static str),
    #[error("the subject_token expires too far in the future")]
    ExpiryTooFar,
    #[error("the provider refused the token: {0}")]
    Refused(&'static str),
    #[error("the {0} provider is not configured")]
    NotConfigured(&'static str),
    #[error("the provider cannot be reached right now; retry shortly")]
    ProviderUnavailable,
}

/// A `[[providers.oidc]]` entry as sign-in needs it.
pub struct GenericOidc {
    pub kind: ProviderKind,
    pub display_name: String,
    pub require_nonce: bool,
}

/// Every configured provider.
pub struct Providers {
    verifiers: Vec<OidcVerifier>,
    /// The `[[providers.oidc]]` entries, in configuration order.
    pub oidc: Vec<GenericOidc>,
    pub dev: Option<Arc<dev::DevProvider>>,
    pub facebook: Option<facebook::Facebook>,
    /// Sign in with Apple's client secret, code redemption, revocation and browser flow.
    pub apple: Option<Arc<apple::Apple>>,
    /// Google's Cross-Account Protection (RISC) receiver.
    pub risc: Option<events::Risc>,
    /// The browser flows of Google and `[[providers.oidc]]` entries with a `client_secret`.
    web: Vec<upstream::OidcWeb>,
    http: reqwest::Client,
}

impl Providers {
    /// Every configured provider; fails only on a Sign in with Apple key that cannot sign.
    pub fn new(
        settings: &Settings,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let mut verifiers = Vec::new();
        let mut web = Vec::new();
        let risc = settings.providers.google.as_ref().map(|google| {
            events::Risc::new(&google.issuer, google.client_ids.clone(), http.clone(), metrics.clone())
        });
        if let Some(google) = &settings.providers.google {
            let keys = jwks::JwksCache::new(http.clone(), google.issuer.clone(), "google", metrics.clone());
            if !secrecy::ExposeSecret::expose_secret(&google.client_secret).is_empty() {
                web.push(upstream::OidcWeb {
                    kind: ProviderKind::Google,
                    client_id: google.client_ids[0].clone(),
                    client_secret: google.client_secret.clone(),
                    keys: keys.clone(),
                });
            }
            verifiers.push(OidcVerifier::new(
                ProviderKind::Google,
                IdTokenPolicy {
                    issuers: google_issuers(&google.issuer),
                    audiences: google.client_ids.clone(),
                    hosted_domain: Some(google.hosted_domain.clone()).filter(|d| !d.is_empty()),
                    algorithm: jsonwebtoken::Algorithm::RS256,
                },
                KeySource::Remote(jwks::JwksCache::new(
                    http.clone(),
                    google.issuer.clone(),
                    "google",
                    metrics.clone(),
                )),
            ));
        }
        let mut apple_client = None;
        if let Some(apple) = &settings.providers.apple {
            let policy = IdTokenPolicy {
                issuers: vec![apple.issuer.trim_end_matches('/').to_string()],
                audiences: apple.client_ids.clone(),
                hosted_domain: None,
                algorithm: jsonwebtoken::Algorithm::RS256,
            };
            let keys = jwks::JwksCache::new(http.clone(), apple.issuer.clone(), "apple", metrics.clone());
            apple_client = Some(Arc::new(apple::Apple::new(apple, keys.clone(), http.clone())?));
            verifiers.push(OidcVerifier::new(ProviderKind::Apple, policy, KeySource::Remote(keys)));
        }
        let mut oidc = Vec::new();
        for p in &settings.providers.oidc {
            let Some(kind) = ProviderKind::from_stored(&p.name) else { continue };
            let policy = IdTokenPolicy {
                issuers: vec![p.issuer.trim_end_matches('/').to_string()],
                audiences: p.client_ids.clone(),
                hosted_domain: None,
                algorithm: jsonwebtoken::Algorithm::RS256,
            };
            let keys = jwks::JwksCache::new(http.clone(), p.issuer.clone(), kind.as_str(), metrics.clone());
            if !secrecy::ExposeSecret::expose_secret(&p.client_secret).is_empty() {
                web.push(upstream::OidcWeb {
                    kind,
                    client_id: p.client_ids[0].clone(),
                    client_secret: p.client_secret.clone(),
                    keys: keys.clone(),
                });
            }
            verifiers.push(OidcVerifier::new(kind, policy, KeySource::Remote(keys)));
            let display_name =
                if p.display_name.is_empty() { p.name.clone() } else { p.display_name.clone() };
            oidc.push(GenericOidc { kind, display_name, require_nonce: p.require_nonce });
        }
        let facebook = settings.providers.facebook.as_ref().map(|fb| {
            verifiers.push(facebook::limited_login_verifier(fb, http.clone(), metrics.clone()));
            facebook::Facebook::new(fb, http.clone())
        });
        let dev = settings.dev.enabled.then(|| Arc::new(dev::DevProvider::new(settings.issuer())));
        if let Some(dev) = &dev {
            verifiers.push(dev.verifier());
        }
        Ok(Self { verifiers, oidc, dev, facebook, apple: apple_client, risc, web, http })
    }

    /// The providers a person can sign in with in the browser.
    pub fn browser_providers(&self) -> Vec<ProviderKind> {
        let mut kinds: Vec<ProviderKind> = self.web.iter().map(|w| w.kind).collect();
        if self.facebook.is_some() {
            kinds.push(ProviderKind::Facebook);
        }
        if self.apple.is_some() {
            kinds.push(ProviderKind::Apple);
        }
        if self.dev.is_some() {
            kinds.push(ProviderKind::Dev);
        }
        kinds
    }

    /// `true` when the provider has a configuration section (dev: dev mode).
    pub fn is_enabled(&self, kind: ProviderKind) -> bool {
        match kind {
            ProviderKind::Facebook => self.facebook.is_some(),
            ProviderKind::Dev => self.dev.is_some(),
            ProviderKind::Google | ProviderKind::Apple | ProviderKind::Oidc(_) => {
                self.verifiers.iter().any(|v| v.kind() == kind)
            }
        }
    }

    /// The provider a request names: a built-in one, or a configured `[[providers.oidc]]`.
    pub fn kind(&self, name: &str) -> Option<ProviderKind> {
        ProviderKind::parse(name).or_else(|| self.oidc.iter().map(|p| p.kind).find(|k| k.as_str() == name))
    }

    /// The browser-flow client of an OpenID Connect provider, when it has one.
    pub(crate) fn web(&self, kind: ProviderKind) -> Option<&upstream::OidcWeb> {
        self.web.iter().find(|w| w.kind == kind)
    }

    /// What the provider-choice page calls a provider.
    pub fn display_name(&self, kind: ProviderKind) -> &str {
        match kind {
            ProviderKind::Google => "Google",
            ProviderKind::Facebook => "Facebook",
            ProviderKind::Apple => "Apple",
            ProviderKind::Dev => "the dev provider",
            ProviderKind::Oidc(name) => self.generic(kind).map_or(name, |p| p.display_name.as_str()),
        }
    }

    /// A configured OIDC provider's entry.
    pub fn generic(&self, kind: ProviderKind) -> Option<&GenericOidc> {
        self.oidc.iter().find(|p| p.kind == kind)
    }

    /// Verifies a Facebook user access token (`debug_token`, then `me` with `appsecret_proof`).
    pub async fn verify_facebook_access_token(
        &self,
        token: &str,
    ) -> Result<VerifiedAssertion, AssertionError> {
        let facebook = self.facebook.as_ref().ok_or(AssertionError::NotConfigured("facebook"))?;
        facebook.verify_access_token(token).await
    }

    /// Verifies an ID token from whichever enabled provider its `iss` names.
    pub async fn verify_id_token(
        &self,
        token: &str,
        requested: Option<ProviderKind>,
    ) -> Result<VerifiedAssertion, AssertionError> {
        if let Some(kind) = requested.filter(|k| !self.is_enabled(*k)) {
            return Err(AssertionError::NotConfigured(kind.as_str()));
        }
        let issuer = oidc::peek_issuer(token)?;
        let verifier =
            self.verifiers.iter().find(|v| v.accepts_issuer(&issuer)).ok_or(AssertionError::UnknownIssuer)?;
        if requested.is_some_and(|r| r != verifier.kind()) {
            return Err(AssertionError::ProviderMismatch);
        }
        verifier.verify(token).await
    }
}

/// Google's real issuer appears with and without the scheme; any other issuer is taken exactly.
pub fn google_issuers(configured: &str) -> Vec<String> {
    let configured = configured.trim_end_matches('/').to_string();
    if configured == "https://accounts.google.com" {
        vec![configured, "accounts.google.com".to_string()]
    } else {
        vec![configured]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_real_issuer_has_two_spellings() {
        assert_eq!(
            google_issuers("https://accounts.google.com"),
            ["https://accounts.google.com", "accounts.google.com"]
        );
    }

    #[test]
    fn any_other_issuer_is_taken_exactly() {
        assert_eq!(google_issuers("http://127.0.0.1:9000"), ["http://127.0.0.1:9000"]);
    }
}
