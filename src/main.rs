//! The command line: serve, migrate, keys, clients, users, admins.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use idbridge::app::{self, Application};
use idbridge::audit::AuditAction;
use idbridge::config::{Settings, DEV_DEFAULTS};
use idbridge::ids::UserId;
use idbridge::service::StateChange;
use idbridge::service::{self, Requester};
use idbridge::{clients, crypto, db};

#[derive(Parser)]
#[command(
    name = "idbridge",
    version,
    about = "Checks a Google or Facebook sign-in once, then speaks its own per-device tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The TOML configuration file (default: $IDBRIDGE_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dev mode: the dev provider and dev clients, loopback only; without a file, SQLite in ./data.
    #[arg(long)]
    dev: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Apply pending migrations and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Master and signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// OAuth clients.
    Clients {
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Administrators.
    Admins {
        #[command(subcommand)]
        command: AdminsCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit log's hash chain end to end (sealing what is pending first); exit 1
    /// naming the first event that was altered, removed or inserted.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The events as JSON lines on stdout, oldest first.
    Export {
        #[command(flatten)]
        config: ConfigArg,
        /// Only events at or after this time (RFC 3339).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Only events before this time (RFC 3339).
        #[arg(long, value_name = "T")]
        until: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new master key (base64 of 32 random bytes).
    GenerateMaster,
    /// Add a new signing key now; it signs once caches of the JWKS have seen it.
    RotateSigning {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Rewrap every wrapped key under the keyring's first master key, online and resumable.
    RotateMaster {
        #[command(flatten)]
        config: ConfigArg,
        /// User keys rewrapped per transaction.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
        /// Stop after this many batches (run again to continue).
        #[arg(long)]
        max_batches: Option<u64>,
    },
    /// How many wrapped keys each master key id holds, and which ids the keyring has.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ClientsCommand {
    /// Print a new random client secret (256 bits) and its `secret_hash`.
    NewSecret,
    /// Read a secret on stdin, print its `secret_hash`.
    HashSecret,
}

/// A user id as idbridge shows it (`sub` of access tokens, `id` of `/v1/me`).
#[derive(clap::Args)]
struct UserArg {
    /// The user's id: `sub` of their access tokens, or `id` in `GET /v1/me`.
    #[arg(value_name = "USER_ID", value_parser = parse_user_id)]
    user_id: UserId,
    #[command(flatten)]
    config: ConfigArg,
}

fn parse_user_id(text: &str) -> Result<UserId, String> {
    UserId::parse(text).ok_or_else(|| idbridge::ids::NOT_A_UUID.to_string())
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Revoke every device of a user.
    RevokeAll(UserArg),
    /// Disable a user: every device ends now, and sign-in is refused until `users enable`.
    Disable(UserArg),
    /// Enable a disabled user again (their ended devices stay ended).
    Enable(UserArg),
    /// Delete a user with their identities, devices and data keys (crypto-shredding), as
    /// `DELETE /v1/me` does; their Sign in with Apple tokens are revoked at Apple.
    Delete(UserArg),
}

#[derive(Subcommand)]
enum AdminsCommand {
    /// Give a user the admin role.
    Grant(UserArg),
    /// Take the admin role away.
    Revoke(UserArg),
}

/// Exit status for configuration errors, as the contract requires.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = runtime.block_on(run(cli));
    // Threads still blocked on a stalled database must not hold the exit up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(3));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("idbridge: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Other(e)) => {
            eprintln!("idbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Config(String),
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.into())
    }
}

/// Start failures that are a setting's fault exit 2 naming the key: an unreadable master key,
/// a database that cannot be reached, a bad client secret hash, dev mode off loopback.
fn start_failure(error: app::StartError) -> Failure {
    match error {
        app::StartError::Keyring(e @ crypto::keyring::KeyringError::Source(..)) => {
            Failure::Config(format!("configuration key `keys.master_keys`: {e}"))
        }
        app::StartError::Unreachable(cause) => Failure::Config(format!(
            "configuration key `database.url`: cannot connect to the database: {cause}"
        )),
        app::StartError::Config(e) => Failure::Config(e.to_string()),
        e @ app::StartError::MasterKeyMissing { .. } => {
            Failure::Config(format!("configuration key `keys.master_keys`: {e}"))
        }
        other => Failure::Other(other.into()),
    }
}

fn load_settings(config: &ConfigArg) -> Result<Settings, Failure> {
    let dev = config.dev;
    let path = config.config.clone().or_else(|| std::env::var_os("IDBRIDGE_CONFIG").map(PathBuf::from));
    let text = match &path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Failure::Config(format!("cannot read the configuration file {}: {e}", path.display()))
        })?,
        None if dev => DEV_DEFAULTS.to_string(),
        None => {
            return Err(Failure::Config("no configuration: pass --config FILE or set IDBRIDGE_CONFIG".into()))
        }
    };
    let mut settings =
        Settings::from_toml_str(&text, std::env::vars()).map_err(|e| Failure::Config(e.to_string()))?;
    if dev {
        settings.enable_dev().map_err(|e| Failure::Config(e.to_string()))?;
    }
    Ok(settings)
}

/// The database for a CLI command, migrated when `auto_migrate` says so.
async fn open_database(settings: &Settings) -> Result<db::Db, Failure> {
    app::open_database(settings, settings.database.auto_migrate).await.map_err(start_failure)
}

/// `users delete`: the deletion, then the revocation of the user's Sign in with Apple tokens
/// at once (a revoke that fails is left to the server, which retries it).
async fn delete_user(
    settings: &Settings,
    db: &db::Db,
    user: &UserId,
    by: &Requester,
) -> Result<Option<String>, Failure> {
    let keyring = Arc::new(app::load_keyring(settings).map_err(start_failure)?);
    let providers = idbridge::providers::Providers::new(
        settings,
        app::provider_http_client(),
        Arc::new(idbridge::metrics::Metrics::new()),
    )
    .map_err(|e| Failure::Config(e.to_string()))?;
    let user_keys = crypto::user_keys::UserKeys::new(keyring.clone());
    if !service::users::delete(db, &user_keys, user, by).await? {
        return Ok(None);
    }
    if let Some(apple) = &providers.apple {
        if let Err(e) = idbridge::housekeeping::revoke_due(db, &keyring, apple).await {
            eprintln!(
                "idbridge: the user is deleted; revoking their Apple tokens is left to the server: {e}"
            );
        }
    }
    Ok(Some("deleted the user; their data keys are destroyed".into()))
}

/// `keys rotate-master`: server secrets, signing keys, then user keys in batches, with a
/// progress bar on a terminal and plain progress lines otherwise.
async fn rotate_master(
    db: &db::Db,
    keyring: Arc<crypto::keyring::MasterKeyring>,
    batch_size: i64,
    max_batches: Option<u64>,
) -> Result<(), Failure> {
    let (secrets, secrets_total) = crypto::server_secrets::rewrap_all(db, keyring.clone()).await?;
    let (signing, signing_total) = crypto::signing::rewrap_all(db, keyring.clone(), |_, _| {}).await?;
    let ring = keyring.clone();
    let (codes, codes_total) =
        db.write(move |conn| idbridge::tokens::codes::rewrap_profiles(conn, &ring)).await?;
    let ring = keyring.clone();
    let (upstream, upstream_total) =
        db.write(move |conn| idbridge::accounts::provider_tokens::rewrap_all(conn, &ring)).await?;
    println!(
        "server secrets: {secrets} of {secrets_total} rewrapped; signing keys: {signing} of {signing_total}; \
         authorization codes: {codes} of {codes_total}; provider tokens: {upstream} of {upstream_total}"
    );
    let current = keyring.key_ids().into_iter().next().unwrap_or_default();
    let ring = keyring.clone();
    let stale = db.run(move |conn| crypto::user_keys::stale_wrapping_keys(conn, &ring)).await?;
    let remaining: i64 = stale.iter().map(|(_, n)| n).sum();
    let old: Arc<Vec<String>> = Arc::new(stale.into_iter().map(|(id, _)| id).collect());
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(remaining as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("user keys {bar:40} {pos}/{len} ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let started = std::time::Instant::now();
    let (mut done, mut batches, mut last_line) = (0usize, 0u64, std::time::Instant::now());
    loop {
        if max_batches.is_some_and(|max| batches >= max) {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            println!("stopped after {batches} batches ({done} user keys); run `keys rotate-master` again to continue");
            return Ok(());
        }
        let (ring, old) = (keyring.clone(), old.clone());
        let n = db.write(move |conn| crypto::user_keys::rewrap_batch(conn, &ring, &old, batch_size)).await?;
        if n == 0 {
            break;
        }
        done += n;
        batches += 1;
        match &bar {
            Some(bar) => bar.inc(n as u64),
            None if last_line.elapsed() >= std::time::Duration::from_secs(1) => {
                eprintln!("rewrapped {done} of {remaining} user keys");
                last_line = std::time::Instant::now();
            }
            None => {}
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "user keys: {done} rewrapped in {secs:.1}s ({:.0}/s); every wrapped key is now under master key {current}",
        done as f64 / secs.max(1e-9)
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => {
            let settings = load_settings(&config)?;
            let application = Application::build(settings).await.map_err(start_failure)?;
            application.run_until_stopped().await?;
        }
        Command::Migrate { config } => {
            let settings = load_settings(&config)?;
            let db = app::open_database(&settings, false).await.map_err(start_failure)?;
            let applied =
                tokio::task::spawn_blocking(move || db.migrate()).await?.map_err(anyhow::Error::msg)?;
            match applied {
                0 => println!("migrations are up to date"),
                n => println!("applied {n} migrations; the schema is up to date"),
            }
        }
        Command::Keys { command: KeysCommand::GenerateMaster } => {
            println!("{}", crypto::keyring::MasterKeyring::generate());
        }
        Command::Keys { command: KeysCommand::RotateSigning { config } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = open_database(&settings).await?;
            let keys = app::load_signing_keys(&settings, &db, keyring).await.map_err(start_failure)?;
            let kid = service::keys::rotate_signing(&db, &keys, &Requester::cli()).await?;
            println!(
                "added signing key {kid}; it is published now and signs in {}s",
                crypto::signing::PUBLISH_LEAD_SECS
            );
        }
        Command::Keys { command: KeysCommand::RotateMaster { config, batch_size, max_batches } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = open_database(&settings).await?;
            rotate_master(&db, keyring, batch_size, max_batches).await?;
        }
        Command::Keys { command: KeysCommand::Status { config } } => {
            let settings = load_settings(&config)?;
            let keyring = app::load_keyring(&settings).map_err(start_failure)?;
            let db = open_database(&settings).await?;
            let usage = db.run(crypto::wrapped_key_usage).await?;
            let ring = keyring.key_ids();
            println!("{:<18} {:>12}  in keyring", "master key id", "wrapped keys");
            let mut ids: Vec<&String> =
                ring.iter().chain(usage.keys().filter(|id| !ring.contains(id))).collect();
            ids.dedup();
            for id in ids {
                let place = match ring.iter().position(|r| r == id) {
                    Some(0) => "yes, first (wraps new keys)",
                    Some(_) => "yes",
                    None => "NO: add it back before starting",
                };
                println!("{id:<18} {:>12}  {place}", usage.get(id).copied().unwrap_or(0));
            }
        }
        Command::Clients { command: ClientsCommand::NewSecret } => {
            let (secret, hash) = clients::new_secret();
            println!("client_secret: {secret}");
            println!("secret_hash: {hash}");
        }
        Command::Clients { command: ClientsCommand::HashSecret } => {
            let mut secret = String::new();
            std::io::stdin().read_to_string(&mut secret)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(Failure::Other(anyhow::anyhow!("the secret on stdin is empty")));
            }
            if secret.len() < 32 {
                eprintln!(
                    "idbridge: warning: this secret is short; a client secret should be long and random \
                     (`idbridge clients new-secret` makes one)"
                );
            }
            println!("{}", clients::hash_secret(secret));
        }
        Command::Audit { command: AuditCommand::Verify { config } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = open_database(&settings).await?;
            let key = app::load_server_secret(&db, keyring, crypto::server_secrets::AUDIT_CHAIN)
                .await
                .map_err(start_failure)?;
            audit_verify(&db, Arc::new(key)).await?;
        }
        Command::Audit { command: AuditCommand::Export { config, since, until } } => {
            let settings = load_settings(&config)?;
            let since = since.as_deref().map(parse_time).transpose()?.unwrap_or(i64::MIN);
            let until = until.as_deref().map(parse_time).transpose()?.unwrap_or(i64::MAX);
            let db = open_database(&settings).await?;
            audit_export(&db, since, until).await?;
        }
        Command::Users { command } => {
            let arg = match &command {
                UsersCommand::RevokeAll(arg)
                | UsersCommand::Disable(arg)
                | UsersCommand::Enable(arg)
                | UsersCommand::Delete(arg) => arg,
            };
            let settings = load_settings(&arg.config)?;
            let db = open_database(&settings).await?;
            let (user, by) = (&arg.user_id, Requester::cli());
            let done = match command {
                UsersCommand::RevokeAll(_) => {
                    match service::devices::end_all(&db, user, &by, AuditAction::UserRevokeAll, None).await? {
                        StateChange::Done(count) => Some(format!("revoked {count} devices")),
                        StateChange::AlreadySo => {
                            Some("the user has no device to revoke; nothing changed".into())
                        }
                        StateChange::Missing => None,
                    }
                }
                UsersCommand::Disable(_) => match service::users::disable(&db, user, &by, None).await? {
                    StateChange::Done(count) => Some(format!("disabled the user; revoked {count} devices")),
                    StateChange::AlreadySo => Some("the user was already disabled; nothing changed".into()),
                    StateChange::Missing => None,
                },
                UsersCommand::Enable(_) => match service::users::enable(&db, user, &by, None).await? {
                    StateChange::Done(()) => Some("enabled the user".into()),
                    StateChange::AlreadySo => Some("the user was not disabled; nothing changed".into()),
                    StateChange::Missing => None,
                },
                UsersCommand::Delete(_) => delete_user(&settings, &db, user, &by).await?,
            };
            println!("{}", done.ok_or_else(|| Failure::Other(anyhow::anyhow!("no such user")))?);
        }
        Command::Admins { command } => {
            let (arg, grant) = match command {
                AdminsCommand::Grant(arg) => (arg, true),
                AdminsCommand::Revoke(arg) => (arg, false),
            };
            let settings = load_settings(&arg.config)?;
            let db = open_database(&settings).await?;
            if !service::users::set_admin(&db, &arg.user_id, grant, &Requester::cli()).await? {
                return Err(Failure::Other(anyhow::anyhow!("no such user")));
            }
            println!("{} the admin role", if grant { "granted" } else { "revoked" });
        }
    }
    Ok(())
}

/// `audit verify`: seals what is pending (as the server would within a second), then walks the
/// chain from its checkpoint.
async fn audit_verify(db: &db::Db, key: Arc<crypto::server_secrets::ServerSecret>) -> Result<(), Failure> {
    use idbridge::audit_chain::{self, Verdict};
    let verdict = db
        .run(move |conn| {
            audit_chain::seal_all(conn, &key)?;
            audit_chain::verify(conn, &key)
        })
        .await?;
    match verdict {
        Verdict::Intact { events, head_seq, head_hash, unsealed } => {
            println!("the audit chain verifies: {events} events checked, up to seq {head_seq}");
            println!("head: {head_seq} {head_hash}");
            if unsealed > 0 {
                println!("{unsealed} events committed since are not sealed yet");
            }
            Ok(())
        }
        Verdict::Altered { id, seq } => Err(Failure::Other(anyhow::anyhow!(
            "audit event {id} (seq {seq}) was altered or inserted: it does not link to the chain"
        ))),
        Verdict::Removed { before: Some(id), expected } => Err(Failure::Other(anyhow::anyhow!(
            "audit events were removed before event {id}: seq {expected} is missing"
        ))),
        Verdict::Removed { before: None, expected } => Err(Failure::Other(anyhow::anyhow!(
            "the newest audit events were removed: seq {expected} onwards is missing"
        ))),
    }
}

/// `audit export`: JSON lines, one object per event, oldest first.
async fn audit_export(db: &db::Db, since: i64, until: i64) -> Result<(), Failure> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = None;
    loop {
        let page = db.run(move |conn| idbridge::audit_chain::export_page(conn, since, until, after)).await?;
        for event in &page {
            writeln!(out, "{}", event.json_line())?;
        }
        match page.last() {
            Some(last) if page.len() >= 1000 => after = Some((last.at, last.id.clone())),
            _ => break,
        }
    }
    out.flush()?;
    Ok(())
}

/// An RFC 3339 time (`2026-12-03T10:00:00Z`, fractions and `+02:00` offsets too) in Unix seconds.
fn parse_time(text: &str) -> Result<i64, Failure> {
    let bad = || Failure::Config(format!("`{text}` is not an RFC 3339 time (like 2026-12-03T10:00:00Z)"));
    let (local, offset) = match text.len().checked_sub(6).and_then(|i| text.get(i..).map(|o| (i, o))) {
        Some((i, o)) if (o.starts_with('+') || o.starts_with('-')) && o.as_bytes()[3] == b':' => {
            let hours: i64 = o[1..3].parse().map_err(|_| bad())?;
            let minutes: i64 = o[4..6].parse().map_err(|_| bad())?;
            let secs = (hours * 60 + minutes) * 60;
            (format!("{}Z", &text[..i]), if o.starts_with('-') { -secs } else { secs })
        }
        _ => (text.to_string(), 0),
    };
    let at = humantime::parse_rfc3339_weak(local.trim_end_matches(['Z', 'z'])).map_err(|_| bad())?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).map_err(|_| bad())?.as_secs() as i64;
    Ok(secs - offset)
}
