//! `IDBRIDGE__SECTION__KEY` environment overrides, applied to the parsed TOML before it is typed.

use std::collections::BTreeMap;

use super::ConfigError;

const ENV_PREFIX: &str = "IDBRIDGE__";

/// `IDBRIDGE__DATABASE__URL=x` sets `database.url`. Values are read as TOML when they parse
/// (numbers, booleans, arrays) and as strings otherwise. Returns the overrides that were read
/// as something other than a string, with their raw text.
pub(super) fn apply_env_overrides(
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

pub(super) fn set_path(
    root: &mut toml::Table,
    path: &[String],
    value: toml::Value,
) -> Result<(), ConfigError> {
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
