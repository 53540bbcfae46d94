//! Settings: the TOML file, then `IDBRIDGE__SECTION__KEY` overrides, validated once at start.
//! Every error names the key it is about.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

const ENV_PREFIX: &str = "IDBRIDGE__";

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

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

/// The admin console's sessions (`/admin`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// A session unused this long ends.
    #[serde(default = "default_admin_idle", deserialize_with = "duration")]
    pub session_idle_ttl: Duration,
    /// No session outlives this.
    #[serde(default = "default_admin_max", deserialize_with = "duration")]
    pub session_max_ttl: Duration,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self { session_idle_ttl: default_admin_idle(), session_max_ttl: default_admin_max() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(default = "default_bind")]
    pub bind: String,
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "yes")]
    pub auto_migrate: bool,
    /// PostgreSQL: how long connecting may take.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// PostgreSQL: the longest a statement may run; also how long a request waits for a
    /// connection or for its write to start before it is answered 503.
    #[serde(default = "default_statement_timeout", deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// PostgreSQL: `false` behind a transaction-mode pooler (no named prepared statements).
    #[serde(default = "yes")]
    pub prepared_statements: bool,
    /// PostgreSQL: a direct URL for `LISTEN` and the migrations' lock, needed when `url` goes
    /// through a transaction-mode pooler.
    #[serde(default)]
    pub listen_url: String,
}

impl DatabaseSettings {
    /// How the pool connects and how long it waits.
    pub fn options(&self) -> crate::db::DbOptions {
        crate::db::DbOptions {
            max_connections: self.max_connections,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            prepared_statements: self.prepared_statements,
            listen_url: (!self.listen_url.is_empty()).then(|| self.listen_url.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    ES256,
    EdDSA,
    RS256,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub master_keys: Vec<String>,
    #[serde(default = "default_alg")]
    pub access_token_alg: SigningAlg,
    #[serde(default = "default_rotation", deserialize_with = "duration")]
    pub signing_key_rotation: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSettings {
    /// Empty means `server.public_url` + `/api`.
    #[serde(default)]
    pub audience: String,
    #[serde(default = "default_access_ttl", deserialize_with = "duration")]
    pub access_ttl: Duration,
    #[serde(default = "default_idle_ttl", deserialize_with = "duration")]
    pub refresh_idle_ttl: Duration,
    #[serde(default = "default_max_ttl", deserialize_with = "duration")]
    pub refresh_max_ttl: Duration,
    #[serde(default = "default_grace", deserialize_with = "duration")]
    pub refresh_reuse_grace: Duration,
    /// Live devices a user may have; a sign-in past it ends the longest-idle one.
    #[serde(default = "default_max_devices")]
    pub max_devices_per_user: u32,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            audience: String::new(),
            access_ttl: default_access_ttl(),
            refresh_idle_ttl: default_idle_ttl(),
            refresh_max_ttl: default_max_ttl(),
            refresh_reuse_grace: default_grace(),
            max_devices_per_user: default_max_devices(),
        }
    }
}

/// How long records of ended things are kept before the sweep deletes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    #[serde(default = "default_audit_retention", deserialize_with = "duration")]
    pub audit_events: Duration,
    /// Revoked devices, and devices whose session passed `refresh_max_ttl`.
    #[serde(default = "default_device_retention", deserialize_with = "duration")]
    pub revoked_devices: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { audit_events: default_audit_retention(), revoked_devices: default_device_retention() }
    }
}

/// Requests per second on `/oauth/token`, `/nonce`, `/introspect` and `/revoke`; 0 turns a
/// limit off. Bursts of twice the rate pass.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Per peer address: requests of public clients and failed client authentications.
    #[serde(default = "default_per_ip")]
    pub per_ip_per_second: u32,
    /// Per authenticated confidential client.
    #[serde(default = "default_per_client")]
    pub per_client_per_second: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { per_ip_per_second: default_per_ip(), per_client_per_second: default_per_client() }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Public,
    Confidential,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    pub client_id: String,
    pub kind: ClientKind,
    #[serde(default)]
    pub secret_hash: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevSettings {
    #[serde(default)]
    pub enabled: bool,
}

fn default_bind() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_connections() -> u32 {
    16
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_statement_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}
fn default_alg() -> SigningAlg {
    SigningAlg::ES256
}
fn default_rotation() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_access_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_idle_ttl() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(90 * 86_400)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_admin_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_admin_max() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_max_devices() -> u32 {
    100
}
fn default_audit_retention() -> Duration {
    Duration::from_secs(365 * 86_400)
}
fn default_device_retention() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_per_ip() -> u32 {
    100
}
fn default_per_client() -> u32 {
    5000
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
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "api".into()]
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

/// `IDBRIDGE__DATABASE__URL=x` sets `database.url`. Values are read as TOML when they parse
/// (numbers, booleans, arrays) and as strings otherwise. Returns the overrides that were read
/// as something other than a string, with their raw text.
fn apply_env_overrides(
    root: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(Vec<String>, String)>, ConfigError> {
    let overrides: BTreeMap<String, String> =
        env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    let mut typed = Vec::new();
    for (name, raw) in overrides {
        let path: Vec<String> =
            name[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|s| s.is_empty()) {
            return Err(ConfigError {
                key: path.join("."),
                message: format!("`{name}` is not a valid override name"),
            });
        }
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        if !value.is_str() {
            typed.push((path.clone(), raw));
        }
        set_path(root, &path, value)?;
    }
    Ok(typed)
}

fn set_path(root: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), ConfigError> {
    let (last, parents) = path.split_last().expect("an override path has one segment at least");
    let mut table = root;
    for segment in parents {
        let entry = table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError {
            key: path.join("."),
            message: format!("`{segment}` is not a section"),
        })?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

/// Settings whose values are secrets (or verify them): never quoted in an error.
fn is_secret_key(key: &str) -> bool {
    ["app_secret", "client_secret", "secret_hash", "master_keys"].iter().any(|name| key.contains(name))
}

/// Builds the dotted key from serde's path and, for unknown or missing fields, the field name.
fn describe_serde_error(path: String, message: String) -> ConfigError {
    let mut key = if path == "." { String::new() } else { path };
    for marker in ["unknown field `", "missing field `"] {
        if let Some(start) = message.find(marker) {
            let rest = &message[start + marker.len()..];
            if let Some(end) = rest.find('`') {
                let field = &rest[..end];
                // serde_path_to_error already ends the path with an unknown field's name.
                if key.is_empty() {
                    key = field.to_string();
                } else if !key.ends_with(&format!(".{field}")) && key != field {
                    key = format!("{key}.{field}");
                }
            }
        }
    }
    // Array indices ("clients[0]") name the section a person edits.
    if key.is_empty() {
        key = "(root)".into();
    }
    // serde quotes the offending value ("invalid type: integer `12345`"); for a secret it must not.
    let message = if is_secret_key(&key) && !message.starts_with("missing field") {
        "has a value of the wrong kind (not shown here); it must be a quoted string".to_string()
    } else {
        message
    };
    ConfigError { key, message }
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
