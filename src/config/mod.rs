//! Settings: the TOML file, then `IDBRIDGE__SECTION__KEY` overrides, validated once at start.
//! Every error names the key it is about.
//!
//! This file holds `Settings`, its loading and its validation; each section's types live in a
//! file of their own.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod clients;
mod database;
mod env;
mod error;
mod providers;
mod server;
mod tokens;

pub use clients::{ClientKind, ClientSettings};
pub use database::{DatabaseSettings, RetentionSettings};
pub use error::ConfigError;
pub use providers::{
    AppleSettings, FacebookSettings, GoogleSettings, OidcProviderSettings, ProviderSettings,
    BUILT_IN_PROVIDERS,
};
pub use server::{AdminSettings, DevSettings, RateLimitSettings, ServerSettings};
pub use tokens::{KeySettings, SigningAlg, TokenSettings};

use env::{apply_env_overrides, set_path};
use error::describe_serde_error;

/// The configuration used by `serve --dev` when no file is given.
pub const DEV_DEFAULTS: &str = r#"
[server]
bind = "127.0.0.1:8080"
public_url = "http://127.0.0.1:8080"

[database]
url = "sqlite://data/idbridge.db"

[keys]
master_keys = ["file:data/master.key"]

[dev]
enabled = true
"#;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub keys: KeySettings,
    #[serde(default)]
    pub tokens: TokenSettings,
    #[serde(default)]
    pub providers: ProviderSettings,
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    #[serde(default)]
    pub dev: DevSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    #[serde(default)]
    pub admin: AdminSettings,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|_| {
        serde::de::Error::custom(format!("`{text}` is not a duration like \"90s\", \"10m\" or \"30d\""))
    })
}

impl Settings {
    /// Parses TOML text, applies the `IDBRIDGE__…` overrides found in `env`, and validates.
    pub fn from_toml_str(
        toml_text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut root: toml::Table = toml_text.parse().map_err(|e: toml::de::Error| ConfigError {
            key: "(file)".into(),
            message: format!("not valid TOML: {}", e.message()),
        })?;
        let mut typed = apply_env_overrides(&mut root, env)?;
        let mut settings: Settings = loop {
            match serde_path_to_error::deserialize(toml::Value::Table(root.clone())) {
                Ok(settings) => break settings,
                Err(e) => {
                    let error = describe_serde_error(e.path().to_string(), e.inner().message().to_string());
                    // An override read as a number or boolean where the setting is text
                    // (`IDBRIDGE__PROVIDERS__FACEBOOK__APP_ID=1234`): take it as written.
                    let Some(at) = typed.iter().position(|(path, _)| path.join(".") == error.key) else {
                        return Err(error);
                    };
                    let (path, raw) = typed.remove(at);
                    set_path(&mut root, &path, toml::Value::String(raw))?;
                }
            }
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Turns dev mode on (`serve --dev`): the dev provider and dev clients, loopback only.
    pub fn enable_dev(&mut self) -> Result<(), ConfigError> {
        self.dev.enabled = true;
        self.check_dev_bind()
    }

    fn check_dev_bind(&self) -> Result<(), ConfigError> {
        let loopback = self.server.bind.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        if self.dev.enabled && !loopback {
            return Err(ConfigError {
                key: "server.bind".into(),
                message: format!("dev mode listens only on a loopback address, not {}", self.server.bind),
            });
        }
        Ok(())
    }

    /// `aud` of every access token.
    pub fn audience(&self) -> &str {
        &self.tokens.audience
    }

    /// The issuer: `server.public_url` without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.server.public_url
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        let err = |key: &str, message: &str| ConfigError { key: key.into(), message: message.into() };
        let public_url = self.server.public_url.trim_end_matches('/').to_string();
        match url::Url::parse(&public_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.query().is_none() => {}
            _ => return Err(err("server.public_url", "must be an http(s) URL")),
        }
        self.server.public_url = public_url;
        if self.server.bind.parse::<std::net::SocketAddr>().is_err() {
            return Err(err("server.bind", "must be an address like 127.0.0.1:8080"));
        }
        crate::db::DbTarget::parse(&self.database.url).map_err(|m| err("database.url", &m))?;
        if self.database.max_connections == 0 {
            return Err(err("database.max_connections", "must be at least 1"));
        }
        if self.database.connect_timeout < Duration::from_secs(1) {
            return Err(err("database.connect_timeout", "must be at least 1s"));
        }
        if self.database.statement_timeout < Duration::from_millis(100) {
            return Err(err("database.statement_timeout", "must be at least 100ms"));
        }
        if !self.database.listen_url.is_empty() {
            match crate::db::DbTarget::parse(&self.database.listen_url) {
                Ok(t) if t.backend == crate::db::Backend::Postgres => {}
                _ => return Err(err("database.listen_url", "must be a postgres:// URL")),
            }
        }
        if self.keys.master_keys.is_empty() {
            return Err(err("keys.master_keys", "needs at least one key"));
        }
        for source in &self.keys.master_keys {
            if !(source.starts_with("file:") || source.starts_with("env:")) {
                return Err(err("keys.master_keys", "each entry is \"file:PATH\" or \"env:VAR\""));
            }
        }
        if self.keys.signing_key_rotation < Duration::from_secs(3600) {
            return Err(err("keys.signing_key_rotation", "must be at least 1h"));
        }
        if self.tokens.audience.is_empty() {
            self.tokens.audience = format!("{}/api", self.server.public_url);
        }
        if self.tokens.access_ttl < Duration::from_secs(1) {
            return Err(err("tokens.access_ttl", "must be at least 1s"));
        }
        if self.admin.session_idle_ttl.as_secs() < 60 {
            return Err(err("admin.session_idle_ttl", "must be at least 1m"));
        }
        if self.admin.session_max_ttl < self.admin.session_idle_ttl {
            return Err(err("admin.session_max_ttl", "must be at least admin.session_idle_ttl"));
        }
        if self.tokens.max_devices_per_user == 0 {
            return Err(err("tokens.max_devices_per_user", "must be at least 1"));
        }
        if self.tokens.refresh_max_ttl < self.tokens.refresh_idle_ttl {
            return Err(err("tokens.refresh_max_ttl", "must not be shorter than tokens.refresh_idle_ttl"));
        }
        if let Some(google) = &self.providers.google {
            if google.client_ids.is_empty() {
                return Err(err("providers.google.client_ids", "needs at least one client id"));
            }
            if url::Url::parse(&google.issuer).is_err() {
                return Err(err("providers.google.issuer", "must be a URL"));
            }
        }
        if let Some(fb) = &self.providers.facebook {
            if fb.app_id.is_empty() {
                return Err(err("providers.facebook.app_id", "must not be empty"));
            }
            for (key, value) in [
                ("providers.facebook.graph_url", &fb.graph_url),
                ("providers.facebook.dialog_url", &fb.dialog_url),
                ("providers.facebook.limited_login_issuer", &fb.limited_login_issuer),
                ("providers.facebook.limited_login_jwks_url", &fb.limited_login_jwks_url),
            ] {
                if !url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                    return Err(err(key, "must be an http(s) URL"));
                }
            }
        }
        if let Some((key, why)) = self.providers.oidc_problem() {
            return Err(err(&key, why));
        }
        self.check_dev_bind()?;
        let mut seen = std::collections::HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            if client.client_id.is_empty()
                || client.client_id.len() > 128
                || client.client_id.contains(char::is_control)
            {
                return Err(err(&key("client_id"), "must be 1 to 128 characters without control characters"));
            }
            if !seen.insert(client.client_id.clone()) {
                return Err(ConfigError {
                    key: key("client_id"),
                    message: format!("`{}` appears twice; client ids must be unique", client.client_id),
                });
            }
            let logout = &client.backchannel_logout_uri;
            let logout_ok = logout.is_empty()
                || url::Url::parse(logout)
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.fragment().is_none());
            if !logout_ok {
                return Err(err(&key("backchannel_logout_uri"), "must be an http(s) URL without a fragment"));
            }
            let needs = match client.kind {
                ClientKind::Confidential if client.secret_hash.is_empty() => {
                    "a confidential client needs a secret_hash (see `idbridge clients new-secret`)"
                }
                ClientKind::Public if !client.secret_hash.is_empty() => "a public client has no secret_hash",
                _ => continue,
            };
            return Err(ConfigError {
                key: key("secret_hash"),
                message: format!("client `{}`: {needs}", client.client_id),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [server]
        public_url = "http://127.0.0.1:8080/"
        [database]
        url = "sqlite://data/x.db"
        [keys]
        master_keys = ["env:K"]
    "#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_toml_str(text, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let s = parse(MINIMAL, &[]).unwrap();
        assert_eq!(s.server.public_url, "http://127.0.0.1:8080");
        assert_eq!(s.tokens.audience, "http://127.0.0.1:8080/api");
        assert_eq!(s.tokens.refresh_reuse_grace, Duration::from_secs(10));
        assert_eq!(s.database.max_connections, 16);
    }

    #[test]
    fn env_overrides_are_typed_and_nested() {
        let s = parse(
            MINIMAL,
            &[("IDBRIDGE__DATABASE__MAX_CONNECTIONS", "4"), ("IDBRIDGE__TOKENS__ACCESS_TTL", "5m")],
        )
        .unwrap();
        assert_eq!(s.database.max_connections, 4);
        assert_eq!(s.tokens.access_ttl, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse(&format!("{MINIMAL}\n[dev]\nturbo = true"), &[]).unwrap_err();
        assert_eq!(e.key, "dev.turbo");
    }

    #[test]
    fn missing_key_is_named() {
        let e =
            parse("[server]\npublic_url = \"http://x\"\n[keys]\nmaster_keys=[\"env:K\"]\n[database]\n", &[])
                .unwrap_err();
        assert_eq!(e.key, "database.url");
    }

    #[test]
    fn a_numeric_override_of_a_text_setting_is_taken_as_text() {
        let text = format!("{MINIMAL}\n[providers.facebook]\napp_id = \"1\"\napp_secret = \"s\"");
        let s = parse(&text, &[("IDBRIDGE__PROVIDERS__FACEBOOK__APP_ID", "1234567890")]).unwrap();
        assert_eq!(s.providers.facebook.unwrap().app_id, "1234567890");
    }

    #[test]
    fn bad_value_is_named() {
        let e = parse(MINIMAL, &[("IDBRIDGE__TOKENS__ACCESS_TTL", "soon")]).unwrap_err();
        assert_eq!(e.key, "tokens.access_ttl");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let text = format!("{MINIMAL}\n[providers.google]\nclient_ids=[\"a\"]\nclient_secret=\"hunter2\"");
        let s = parse(&text, &[]).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
