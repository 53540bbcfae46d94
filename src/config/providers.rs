//! `[providers.google]` and `[providers.facebook]`: the sign-in providers idbridge accepts.

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub google: Option<GoogleSettings>,
    pub facebook: Option<FacebookSettings>,
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
