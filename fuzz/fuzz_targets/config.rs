//! The configuration loader: TOML text plus `IDBRIDGE__…` overrides. Whatever comes in, the
//! answer is settings or an error naming a key, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The text also stands in for one environment override, split at the first newline.
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let env = first.split_once('=').map(|(k, v)| (format!("IDBRIDGE__{k}"), v.to_string()));
    let _ = idbridge::config::Settings::from_toml_str(rest, env);
    let _ = idbridge::config::Settings::from_toml_str(text, Vec::<(String, String)>::new());
});
