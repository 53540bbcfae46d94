//! Configuration errors stop `idbridge serve` with exit status 2 and name the key.
//! These run the real binary; no database is touched.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::write_master_key;

/// How long a refused start may take before we call it "it started anyway" (a guard against a
/// hanging test, not a timing assertion).
const START_GUARD: Duration = Duration::from_secs(60);

fn valid_config(dir: &Path) -> String {
    let master_key = write_master_key(dir);
    format!(
        r#"[server]
bind = "127.0.0.1:0"
public_url = "http://idbridge.test"

[database]
url = "sqlite://{db}"
max_connections = 8

[keys]
master_keys = ["file:{master_key}"]
access_token_alg = "ES256"

[tokens]
audience = "http://idbridge.test/api"
access_ttl = "10m"
refresh_idle_ttl = "30d"
refresh_max_ttl = "90d"
refresh_reuse_grace = "10s"

[[clients]]
client_id = "app"
kind = "public"
redirect_uris = ["com.example.app:/cb"]
scopes = ["openid", "profile", "api"]
"#,
        db = dir.join("idbridge.db").display(),
    )
}

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

/// Runs `idbridge serve --config <file>` with `toml`, no inherited IDBRIDGE_* variables and
/// `env` added. Returns None when the process was still running after START_GUARD (then killed).
fn serve_with(dir: &Path, toml: &str, env: &[(&str, &str)]) -> Option<Outcome> {
    let path = dir.join("idbridge.toml");
    std::fs::write(&path, toml).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idbridge"));
    cmd.arg("serve")
        .arg("--config")
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("IDBRIDGE") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawn idbridge");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(START_GUARD) {
        Ok(out) => {
            let out = out.expect("wait for idbridge");
            Some(Outcome {
                code: out.status.code(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            None
        }
    }
}

#[track_caller]
fn assert_refused_naming(outcome: Option<Outcome>, key: &str) {
    let o = outcome
        .unwrap_or_else(|| panic!("idbridge kept running despite the bad {key}; expected exit status 2"));
    assert_eq!(o.code, Some(2), "exit status; stderr: {}", o.stderr);
    assert!(o.stderr.contains(key), "stderr does not name {key}: {}", o.stderr);
}

#[test]
fn unknown_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path()).replace("max_connections = 8\n", "max_connections = 8\nbogus = 1\n");

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "database.bogus");
}

#[test]
fn bad_value_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path()).replace("max_connections = 8\n", "max_connections = \"many\"\n");

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "database.max_connections");
}

#[test]
fn missing_database_url_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let toml: String = valid_config(dir.path())
        .lines()
        .filter(|l| !l.starts_with("url = "))
        .map(|l| format!("{l}\n"))
        .collect();

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "database.url");
}

#[test]
fn bad_env_override_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path());

    let outcome = serve_with(dir.path(), &toml, &[("IDBRIDGE__DATABASE__MAX_CONNECTIONS", "abc")]);

    assert_refused_naming(outcome, "database.max_connections");
}

#[test]
fn bad_duration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path()).replace("access_ttl = \"10m\"", "access_ttl = \"ten minutes\"");

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "tokens.access_ttl");
}

#[test]
fn malformed_master_key_entry_exits_2_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "c2VjcmV0LW1hc3Rlci1rZXktbXVzdC1uZXZlci1sZWFr";
    let base = valid_config(dir.path());
    let start = base.find("master_keys = ").unwrap();
    let end = start + base[start..].find('\n').unwrap();
    let toml = format!("{}master_keys = [\"{secret}\"]{}", &base[..start], &base[end..]);

    let outcome = serve_with(dir.path(), &toml, &[]);
    let o = outcome.expect("idbridge kept running despite a master key entry without file:/env:");

    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("keys.master_keys"), "stderr does not name keys.master_keys: {}", o.stderr);
    assert!(!o.stderr.contains(secret), "the secret is echoed on stderr: {}", o.stderr);
}

#[test]
fn unreadable_master_key_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid_config(dir.path());
    let start = base.find("master_keys = ").unwrap();
    let end = start + base[start..].find('\n').unwrap();
    let missing = dir.path().join("no-such.key");
    let toml = format!("{}master_keys = [\"file:{}\"]{}", &base[..start], missing.display(), &base[end..]);

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "keys.master_keys");
}

#[test]
fn a_secret_written_as_a_bare_number_is_named_but_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n[providers.google]\nclient_ids = [\"a\"]\nclient_secret = 987654321987\n",
        valid_config(dir.path())
    );

    let outcome = serve_with(dir.path(), &toml, &[]);
    let o = outcome.expect("idbridge kept running despite a numeric client_secret");

    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr);
    assert!(o.stderr.contains("providers.google.client_secret"), "stderr: {}", o.stderr);
    assert!(!o.stderr.contains("987654321987"), "the secret is printed: {}", o.stderr);
}

#[test]
fn messages_carry_no_parser_noise() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path()).replace("access_ttl = \"10m\"", "access_ttl = \"soon\"");

    let o = serve_with(dir.path(), &toml, &[]).expect("refused");

    assert_eq!(o.code, Some(2), "stderr: {}", o.stderr);
    assert!(!o.stderr.contains("expected number at"), "humantime's detail leaks: {}", o.stderr);
    assert!(!o.stderr.contains("in `"), "a trailing `in` line: {}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);
}

#[test]
fn a_master_key_file_readable_by_others_exits_2_naming_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path());
    std::fs::set_permissions(dir.path().join("master.key"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "keys.master_keys");
}

#[test]
fn dev_mode_on_a_public_address_exits_2_naming_server_bind() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path()).replace("bind = \"127.0.0.1:0\"", "bind = \"0.0.0.0:0\"");

    let outcome = serve_with(dir.path(), &format!("{toml}\n[dev]\nenabled = true\n"), &[]);

    assert_refused_naming(outcome, "server.bind");
}

#[test]
fn an_unreachable_postgres_exits_2_naming_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let base = valid_config(dir.path());
    let start = base.find("\nurl = ").unwrap() + 1;
    let end = start + base[start..].find('\n').unwrap();
    let toml = format!("{}url = \"postgres://nobody@127.0.0.1:1/none\"{}", &base[..start], &base[end..]);

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "database.url");
}

#[test]
fn a_confidential_client_without_a_secret_hash_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "{}\n[[clients]]\nclient_id = \"backend\"\nkind = \"confidential\"\n",
        valid_config(dir.path())
    );

    let outcome = serve_with(dir.path(), &toml, &[]);
    let o = outcome.expect("refused");

    assert_refused_naming(Some(Outcome { code: o.code, stderr: o.stderr.clone() }), "clients[1].secret_hash");
    assert!(o.stderr.contains("backend"), "the client is named: {}", o.stderr);
}

/// Runs `idbridge ARGS` with no configuration in the environment.
fn cli(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_idbridge"));
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("IDBRIDGE") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawn idbridge");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().expect("wait")
}

#[test]
fn clients_new_secret_prints_a_random_secret_and_its_hash() {
    let out = cli(&["clients", "new-secret"], "");

    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    let (secret, hash) = (field("client_secret"), field("secret_hash"));
    assert!(secret.len() >= 43, "256 bits: {secret}");
    assert_eq!(hash, idbridge::clients::hash_secret(secret));
    let hashed = cli(&["clients", "hash-secret"], &format!("{secret}\n"));
    assert_eq!(String::from_utf8(hashed.stdout).unwrap().trim(), hash, "hash-secret prints the same form");
}

#[test]
fn a_malformed_user_id_is_named_as_such() {
    let out = cli(&["users", "revoke-all", "not-a-uuid", "--dev"], "");

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("UUID"), "{stderr}");
}

#[test]
fn a_device_cap_of_zero_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = valid_config(dir.path())
        .replace("refresh_reuse_grace = \"10s\"", "refresh_reuse_grace = \"10s\"\nmax_devices_per_user = 0");

    let outcome = serve_with(dir.path(), &toml, &[]);

    assert_refused_naming(outcome, "tokens.max_devices_per_user");
}

/// A `[[providers.oidc]]` name is `[a-z0-9-]{1,32}`, not a built-in provider's, and unique.
#[test]
fn bad_oidc_provider_names_exit_2_naming_the_key() {
    let entry = |name: &str| {
        format!("\n[[providers.oidc]]\nname = \"{name}\"\nissuer = \"https://login.example\"\nclient_ids = [\"c\"]\n")
    };
    for (entries, key) in [
        (entry("Entra"), "providers.oidc[0].name"),
        (entry("google"), "providers.oidc[0].name"),
        (entry("apple"), "providers.oidc[0].name"),
        (format!("{}{}", entry("entra"), entry("entra")), "providers.oidc[1].name"),
        (entry("entra").replace("https://login.example", "not a url"), "providers.oidc[0].issuer"),
        (entry("entra").replace("[\"c\"]", "[]"), "providers.oidc[0].client_ids"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!("{}{entries}", valid_config(dir.path()));

        assert_refused_naming(serve_with(dir.path(), &toml, &[]), key);
    }
}

#[test]
fn an_incomplete_apple_section_exits_2_naming_the_key() {
    let section = "\n[providers.apple]\nclient_ids = [\"com.example.app\"]\nteam_id = \"T\"\nkey_id = \"K\"\nprivate_key = \"file:/k.p8\"\n";
    for (broken, key) in [
        (section.replace("team_id = \"T\"", "team_id = \"\""), "providers.apple.team_id"),
        (section.replace("[\"com.example.app\"]", "[]"), "providers.apple.client_ids"),
        (section.replace("file:/k.p8", "-----BEGIN PRIVATE KEY-----"), "providers.apple.private_key"),
        // Read at start: a key file that is missing, or that holds no P-256 PKCS#8 key.
        (section.to_string(), "providers.apple.private_key"),
        (section.replace("file:/k.p8", "file:not-a-key.p8"), "providers.apple.private_key"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let not_a_key = dir.path().join("not-a-key.p8");
        std::fs::write(&not_a_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
        std::fs::set_permissions(&not_a_key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let toml = format!("{}{broken}", valid_config(dir.path()));

        assert_refused_naming(serve_with(dir.path(), &toml, &[]), key);
    }
}
