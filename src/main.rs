//! The command line: serve, migrate, keys, clients, users, admins.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use idbridge::app::{self, Application};
use idbridge::config::{Settings, DEV_DEFAULTS};
use idbridge::{accounts, clients, crypto, db};

#[derive(Parser)]
#[command(
    name = "idbridge",
    version,
    about = "Checks a Google sign-in once, then speaks its own per-device tokens"
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
    /// Rewrap every wrapped key under the keyring's first master key (resumable).
    RotateMaster {
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
    user_id: String,
    #[command(flatten)]
    config: ConfigArg,
}

fn parse_user_id(text: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(text)
        .map(|id| id.to_string())
        .map_err(|_| "a user id is a UUID such as 0192f5e4-7c1a-7d2e-9b1f-3a4c5d6e7f80".to_string())
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Revoke every device of a user.
    RevokeAll(UserArg),
    /// Disable a user: every device ends now, and sign-in is refused until `users enable`.
    Disable(UserArg),
    /// Enable a disabled user again (their ended devices stay ended).
    Enable(UserArg),
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
    match runtime.block_on(run(cli)) {
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
            let kid = db.write(move |conn| keys.add_key(conn, db::now())).await?;
            println!(
                "added signing key {kid}; it is published now and signs in {}s",
                crypto::signing::PUBLISH_LEAD_SECS
            );
        }
        Command::Keys { command: KeysCommand::RotateMaster { config } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = open_database(&settings).await?;
            let (secrets_done, secrets_total) =
                crypto::server_secrets::rewrap_all(&db, keyring.clone()).await?;
            let (done, total) = crypto::signing::rewrap_all(&db, keyring, |done, total| {
                eprint!("\rrewrapping signing keys: {done}/{total}");
            })
            .await?;
            eprintln!();
            println!(
                "{} of {} wrapped keys rewrapped under the first master key",
                done + secrets_done,
                total + secrets_total
            );
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
        Command::Users { command } => {
            let (arg, action, disable) = match command {
                UsersCommand::RevokeAll(arg) => (arg, "user.revoke_all", None),
                UsersCommand::Disable(arg) => (arg, "user.disable", Some(true)),
                UsersCommand::Enable(arg) => (arg, "user.enable", Some(false)),
            };
            let settings = load_settings(&arg.config)?;
            let db = open_database(&settings).await?;
            let user_id = arg.user_id;
            let count = db
                .write(move |conn| {
                    let now = db::now();
                    let by = accounts::Revocation {
                        actor: "cli",
                        action,
                        detail: None,
                        origin: &Default::default(),
                    };
                    match disable {
                        Some(disabled) => accounts::set_disabled(conn, &user_id, disabled, &by, now),
                        None if accounts::user_exists(conn, &user_id)? => {
                            accounts::end_all_devices(conn, &user_id, &by, now).map(Some)
                        }
                        None => Ok(None),
                    }
                })
                .await?;
            let Some(count) = count else {
                return Err(Failure::Other(anyhow::anyhow!("no such user")));
            };
            match disable {
                Some(true) => println!("disabled the user; revoked {count} devices"),
                Some(false) => println!("enabled the user"),
                None => println!("revoked {count} devices"),
            }
        }
        Command::Admins { command } => {
            let (arg, grant) = match command {
                AdminsCommand::Grant(arg) => (arg, true),
                AdminsCommand::Revoke(arg) => (arg, false),
            };
            let settings = load_settings(&arg.config)?;
            let db = open_database(&settings).await?;
            let user_id = arg.user_id;
            let changed = db
                .write(move |conn| {
                    let changed = accounts::set_admin(conn, &user_id, grant)?;
                    if changed {
                        accounts::audit::record(
                            conn,
                            accounts::audit::AuditEvent {
                                actor: "cli",
                                action: if grant { "admin.grant" } else { "admin.revoke" },
                                user_id: Some(&user_id),
                                device_id: None,
                                detail: None,
                            },
                            &Default::default(),
                            db::now(),
                        )?;
                    }
                    Ok::<_, db::DbError>(changed)
                })
                .await?;
            if !changed {
                return Err(Failure::Other(anyhow::anyhow!("no such user")));
            }
            println!("{} the admin role", if grant { "granted" } else { "revoked" });
        }
    }
    Ok(())
}
