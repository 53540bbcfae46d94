//! `[providers.google]`, `[providers.facebook]`, `[providers.apple]` and
//! `[[providers.oidc]]`: the sign-in providers idbridge accepts.

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub google: Option<GoogleSettings>,
    pub facebook: Option<FacebookSettings>,
    pub apple: Option<AppleSettings>,
    /// Any other OpenID Connect provider, each under its own `name`.
    #[serde(default)]
    pub oidc: Vec<OidcProviderSettings>,
}

/// Sign in with Apple: ID tokens of the app's bundle ids and Services IDs, checked against
/// Apple's keys from discovery at `issuer`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppleSettings {
    /// Bundle ids (native) and Services IDs (web): the accepted `aud` values.
    pub client_ids: Vec<String>,
    pub team_id: String,
    pub key_id: String,
    /// The Sign in with Apple key (PKCS#8 PEM), as `file:PATH` or `env:NAME`.
    pub private_key: SecretString,
    #[serde(default = "default_apple_issuer")]
    pub issuer: String,
}

/// A `[[providers.oidc]]` entry: an OpenID Connect provider found through discovery at
/// `issuer`, whose ID tokens are checked as Google's are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderSettings {
    /// `provider=` in requests and `idp` in tokens: `[a-z0-9-]{1,32}`, not a built-in name.
    pub name: String,
    /// On the provider-choice page.
    #[serde(default)]
    pub display_name: String,
    pub issuer: String,
    pub client_ids: Vec<String>,
    /// Turns on the browser flow.
    #[serde(default = "empty_secret")]
    pub client_secret: SecretString,
    #[serde(default)]
    pub require_nonce: bool,
}

/// Provider names that are not free for a `[[providers.oidc]]` entry.
pub const BUILT_IN_PROVIDERS: [&str; 4] = ["google", "facebook", "apple", "dev"];

impl ProviderSettings {
    /// The first thing wrong with `[providers.apple]` or the `[[providers.oidc]]` entries:
    /// `(key, why)`.
    pub fn oidc_problem(&self) -> Option<(String, &'static str)> {
        if let Some(apple) = &self.apple {
            let key = |field: &str| format!("providers.apple.{field}");
            if apple.client_ids.is_empty() || apple.client_ids.iter().any(String::is_empty) {
                return Some((key("client_ids"), "needs at least one client id, none empty"));
            }
            if apple.team_id.is_empty() {
                return Some((key("team_id"), "must not be empty"));
            }
            if apple.key_id.is_empty() {
                return Some((key("key_id"), "must not be empty"));
            }
            let source = secrecy::ExposeSecret::expose_secret(&apple.private_key);
            if !(source.starts_with("file:") || source.starts_with("env:")) {
                return Some((key("private_key"), "must be file:PATH or env:NAME"));
            }
            if !url::Url::parse(&apple.issuer).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Some((key("issuer"), "must be an http(s) URL"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.oidc.iter().enumerate() {
            let key = |field: &str| format!("providers.oidc[{i}].{field}");
            let well_formed = (1..=32).contains(&p.name.len())
                && p.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !well_formed {
                return Some((key("name"), "must be 1 to 32 of a-z, 0-9 and -"));
            }
            if BUILT_IN_PROVIDERS.contains(&p.name.as_str()) {
                return Some((key("name"), "is the name of a built-in provider"));
            }
            if !names.insert(p.name.as_str()) {
                return Some((key("name"), "names another [[providers.oidc]] entry too"));
            }
            if !url::Url::parse(&p.issuer).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Some((key("issuer"), "must be an http(s) URL"));
            }
            if p.client_ids.is_empty() || p.client_ids.iter().any(String::is_empty) {
                return Some((key("client_ids"), "needs at least one client id, none empty"));
            }
            if p.display_name.chars().count() > 64 {
                return Some((key("display_name"), "must be at most 64 characters"));
            }
        }
        None
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSettings {
    pub client_ids: Vec<String>,
    #[serde(default = "default_google_issuer")]
    pub issuer: String,
    #[serde(default = "empty_secret")]
    pub client_secret: SecretString,
    #[serde(default)]
    pub hosted_domain: String,
    #[serde(default)]
    pub require_nonce: bool,
}

/// Facebook: classic access tokens, Limited Login ID tokens and the browser flow. Every URL
/// can be pointed elsewhere (the tests point them at fakes on loopback).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FacebookSettings {
    pub app_id: String,
    pub app_secret: SecretString,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    #[serde(default = "default_dialog_url")]
    pub dialog_url: String,
    #[serde(default = "default_ll_issuer")]
    pub limited_login_issuer: String,
    #[serde(default = "default_ll_jwks")]
    pub limited_login_jwks_url: String,
}

fn default_google_issuer() -> String {
    "https://accounts.google.com".into()
}
fn default_apple_issuer() -> String {
    "https://appleid.apple.com".into()
}
fn empty_secret() -> SecretString {
    SecretString::from(String::new())
}
fn default_graph_url() -> String {
    "https://graph.facebook.com/v21.0".into()
}
fn default_dialog_url() -> String {
    "https://www.facebook.com/v21.0/dialog/oauth".into()
}
fn default_ll_issuer() -> String {
    "https://www.facebook.com".into()
}
fn default_ll_jwks() -> String {
    "https://limited.facebook.com/.well-known/oauth/openid/jwks/".into()
}
