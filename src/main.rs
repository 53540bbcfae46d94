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
    about = "Checks Google or Facebook sign-in once, then speaks its own tokens"
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
    /// Read a secret on stdin, print its hash for `secret_hash`.
    HashSecret,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Revoke every device of a user.
    RevokeAll {
        user_id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum AdminsCommand {
    /// Give a user the admin role.
    Grant {
        user_id: String,
        #[command(flatten)]
        config: ConfigArg,
    },
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

/// A master key that cannot be read is a bad `keys.master_keys` value: exit 2, key named.
fn start_failure(error: app::StartError) -> Failure {
    match error {
        app::StartError::Keyring(e @ crypto::keyring::KeyringError::Source(..)) => {
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
        settings.enable_dev();
    }
    Ok(settings)
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
            app::open_database(&settings, true).await?;
            println!("migrations are up to date");
        }
        Command::Keys { command: KeysCommand::GenerateMaster } => {
            println!("{}", crypto::keyring::MasterKeyring::generate());
        }
        Command::Keys { command: KeysCommand::RotateSigning { config } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = app::open_database(&settings, settings.database.auto_migrate).await?;
            let keys = app::load_signing_keys(&settings, &db, keyring).await?;
            let kid = db.write(move |conn| keys.add_key(conn, db::now())).await?;
            println!(
                "added signing key {kid}; it is published now and signs in {}s",
                crypto::signing::PUBLISH_LEAD_SECS
            );
        }
        Command::Keys { command: KeysCommand::RotateMaster { config } } => {
            let settings = load_settings(&config)?;
            let keyring = Arc::new(app::load_keyring(&settings).map_err(start_failure)?);
            let db = app::open_database(&settings, settings.database.auto_migrate).await?;
            let (done, total) = crypto::signing::rewrap_all(&db, keyring, |done, total| {
                eprint!("\rrewrapping signing keys: {done}/{total}");
            })
            .await?;
            eprintln!();
            println!("{done} of {total} wrapped keys rewrapped under the first master key");
        }
        Command::Clients { command: ClientsCommand::HashSecret } => {
            let mut secret = String::new();
            std::io::stdin().read_to_string(&mut secret)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                return Err(Failure::Other(anyhow::anyhow!("the secret on stdin is empty")));
            }
            println!("{}", clients::hash_secret(secret));
        }
        Command::Users { command: UsersCommand::RevokeAll { user_id, config } } => {
            let settings = load_settings(&config)?;
            let db = app::open_database(&settings, settings.database.auto_migrate).await?;
            let count = db
                .write(move |conn| {
                    let now = db::now();
                    if !accounts::user_exists(conn, &user_id)? {
                        return Ok(None);
                    }
                    let by = accounts::Revocation {
                        actor: "cli",
                        action: "user.revoke_all",
                        detail: None,
                        origin: &Default::default(),
                    };
                    let count = accounts::end_all_devices(conn, &user_id, &by, now)?;
                    Ok::<_, db::DbError>(Some(count))
                })
                .await?;
            match count {
                Some(count) => println!("revoked {count} devices"),
                None => return Err(Failure::Other(anyhow::anyhow!("no such user"))),
            }
        }
        Command::Admins { command: AdminsCommand::Grant { user_id, config } } => {
            let settings = load_settings(&config)?;
            let db = app::open_database(&settings, settings.database.auto_migrate).await?;
            let granted = db
                .write(move |conn| {
                    let granted = accounts::grant_admin(conn, &user_id)?;
                    if granted {
                        accounts::audit::record(
                            conn,
                            accounts::audit::AuditEvent {
                                actor: "cli",
                                action: "admin.grant",
                                user_id: Some(&user_id),
                                device_id: None,
                                detail: None,
                            },
                            &Default::default(),
                            db::now(),
                        )?;
                    }
                    Ok::<_, db::DbError>(granted)
                })
                .await?;
            if !granted {
                return Err(Failure::Other(anyhow::anyhow!("no such user")));
            }
            println!("granted the admin role");
        }
    }
    Ok(())
}
