//! `ConfigError`, and how a serde error becomes one that names its key without quoting a secret.

use std::fmt;

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

/// Settings whose values are secrets (or verify them): never quoted in an error.
fn is_secret_key(key: &str) -> bool {
    ["app_secret", "client_secret", "secret_hash", "master_keys", "private_key"]
        .iter()
        .any(|name| key.contains(name))
}

/// Builds the dotted key from serde's path and, for unknown or missing fields, the field name.
pub(super) fn describe_serde_error(path: String, message: String) -> ConfigError {
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
