//! `envsnapctl`: the control client of envsnapd. Parses arguments into a protocol
//! request and hands it to `envsnap::cli`, which talks to the daemon and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser, Subcommand};
use envsnap::cli::{self, CliError};
use envsnap::control::client::Client;
use envsnap::control::protocol::Request;

#[derive(Debug, Parser)]
#[command(
    name = "envsnapctl",
    version,
    about = "Control envsnapd, the envsnap backup daemon"
)]
struct Arguments {
    /// The daemon's control socket [default: $ENVSNAP_SOCKET, else daemon.socket in
    /// /etc/envsnap/envsnap.toml, else /run/envsnap/envsnapd.sock, else the socket of a
    /// daemon started without a config]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the result as one JSON document (times in RFC 3339, UTC)
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Daemon health: version, uptime, store reachability, job queue
    Status,
    /// Re-read the daemon's config (like SIGHUP)
    Reload,
    /// Environments
    #[command(subcommand)]
    Env(EnvCommand),
    /// Backups of an environment
    #[command(subcommand)]
    Backup(BackupCommand),
    /// The daemon's job queue
    #[command(subcommand)]
    Job(JobCommand),
    /// Every host sharing the store: environments, last backups, stale hosts
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Restore drills: `drill ENV [BACKUP]` restores a backup into a private sandbox
    /// and checks every part with its engine; `drill list ENV`, `drill show ID`
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Drill {
        #[command(subcommand)]
        command: Option<DrillCommand>,
        /// The environment
        #[arg(required = true)]
        env: Option<String>,
        /// The backup to drill (default: the newest completed one)
        backup: Option<String>,
        /// Follow the drill; exit non-zero if it fails
        #[arg(long)]
        wait: bool,
        /// Keep the sandbox afterwards (the report says where)
        #[arg(long)]
        keep: bool,
    },
    /// Store archives made elsewhere (tar, dumps; plain, gzip or zstd) as a backup
    Import {
        env: String,
        /// PART=FILE or PART=URL (http(s)://, s3://, gs://, az://, fetched by the
        /// daemon): the part the archive is for and where it is (repeat per part)
        #[arg(long = "part", value_name = "PART=FILE", required = true, value_parser = cli::import::parse_part)]
        parts: Vec<(String, PathBuf)>,
        /// The backup's name (default: generated from the time)
        #[arg(long)]
        name: Option<String>,
        /// The version the backup records (default: the environment's current one)
        #[arg(long)]
        version: Option<String>,
        /// Follow the job; exit non-zero if it fails
        #[arg(long)]
        wait: bool,
        /// Then restore the imported backup (asks to type the environment's name
        /// unless --yes)
        #[arg(long)]
        restore: bool,
        /// Do not ask for confirmation
        #[arg(long, requires = "restore")]
        yes: bool,
        /// Keep the archives' setuid and setgid bits (root only; dropped otherwise)
        #[arg(long)]
        keep_setuid: bool,
    },
    /// Replace an environment's code, files and databases with a backup's
    Restore {
        env: String,
        backup: String,
        /// Restore a backup of another environment (ENV) or host (HOST/ENV)
        #[arg(long, value_name = "ENV|HOST/ENV")]
        from: Option<String>,
        /// Restore backup part SRC into this environment's part DST (DST `-`: skip SRC)
        #[arg(long = "map", value_name = "SRC=DST", value_parser = parse_mapping)]
        map: Vec<(String, String)>,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
        /// Follow the restore until it ends; exit non-zero if it fails
        #[arg(long)]
        wait: bool,
        /// Skip the pre-restore safety backup (no rollback possible)
        #[arg(long)]
        no_safety_backup: bool,
        /// Show what would be replaced, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// The activity log: who did what, when
    Log {
        /// Only entries about this environment
        env: Option<String>,
        /// Only entries since TIME: RFC 3339, a local date (2026-11-24) or a duration ago (2h, 3d)
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<DateTime<Utc>>,
        /// At most this many entries
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// Check that the objects a backup needs exist (and, with --read-data, decode)
    Verify {
        env: String,
        /// One backup (default: all of the environment)
        backup: Option<String>,
        /// Read every byte and check it against its hash
        #[arg(long)]
        read_data: bool,
    },
    /// Delete expired backups and reclaim unreferenced data
    Prune {
        /// Report what would be deleted without deleting
        #[arg(long)]
        dry_run: bool,
    },
    /// The daemon's catalog
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (envsnapctl.1 and one per command) into DIR
    #[command(hide = true)]
    ManPages { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum EnvCommand {
    /// All environments
    List,
    /// One environment
    Show { env: String },
}

#[derive(Debug, Subcommand)]
enum BackupCommand {
    /// Back up an environment now
    Create {
        env: String,
        /// The backup's name (default: generated from the time)
        #[arg(long)]
        name: Option<String>,
        /// Follow the job; exit non-zero if it fails
        #[arg(long)]
        wait: bool,
        /// Keep the backup until TIME instead of for the environment's retention:
        /// RFC 3339, a local date (2027-01-31) or a duration from now (90d)
        #[arg(long, value_name = "TIME", value_parser = parse_until)]
        keep_until: Option<DateTime<Utc>>,
    },
    /// Change how long a backup is kept
    Keep {
        env: String,
        backup: String,
        /// Keep it until TIME: RFC 3339, a local date or a duration from now
        #[arg(long, value_name = "TIME", value_parser = parse_until, required_unless_present = "forever")]
        until: Option<DateTime<Utc>>,
        /// Keep it until deleted by hand
        #[arg(long, conflicts_with = "until")]
        forever: bool,
    },
    /// An environment's backups
    List { env: String },
    /// One backup with its parts
    Show { env: String, backup: String },
    /// Write one part of a backup to a file, as tar (tar.zst) or its native dump
    Download {
        env: String,
        backup: String,
        /// The part, as `backup show` lists it (code, files:NAME, database:NAME)
        #[arg(long)]
        part: String,
        /// The file to write (created as the calling user; `-` for standard output)
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// tar or tar.zst for code and files (default: from FILE's name, else tar);
        /// native for databases
        #[arg(long)]
        format: Option<String>,
    },
    /// A temporary private URL to one part of a backup (S3, GCS and Azure stores)
    Link {
        env: String,
        backup: String,
        /// The part, as `backup show` lists it (code, files:NAME, database:NAME)
        #[arg(long)]
        part: String,
        /// How long the link works: 90s, 5m, 1h (at most 1h)
        #[arg(long, default_value = "5m", value_parser = envsnap::config::parse_duration)]
        ttl: std::time::Duration,
        /// tar or tar.zst for code and files (default tar); native for databases
        #[arg(long)]
        format: Option<String>,
    },
    /// Delete a backup (asks to type its name unless --yes)
    Delete {
        env: String,
        backup: String,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum JobCommand {
    /// Jobs, newest first
    List,
    /// One job
    Show { id: i64 },
    /// Follow a job until it ends; exit non-zero if it fails or is cancelled
    Watch { id: i64 },
    /// Cancel a queued or running job
    Cancel { id: i64 },
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Every host of the store and its environments
    List,
    /// One host: its environments and every backup it left in the store
    Show { host: String },
    /// Retire a host so it stops alarming; its backups stay unless --delete-backups
    Forget {
        host: String,
        /// Also delete everything the host stored (asks to type its name unless --yes)
        #[arg(long)]
        delete_backups: bool,
        /// Do not ask for confirmation
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DrillCommand {
    /// An environment's drills, newest first
    List { env: String },
    /// One drill's report
    Show { id: i64 },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Recreate the catalog from the store
    Rebuild,
}

impl Command {
    fn request(self) -> Request {
        match self {
            Command::Status => Request::Status,
            Command::Reload => Request::Reload,
            Command::Env(EnvCommand::List) => Request::EnvList,
            Command::Env(EnvCommand::Show { env }) => Request::EnvShow { env },
            Command::Backup(BackupCommand::Create {
                env,
                name,
                wait,
                keep_until,
            }) => Request::BackupCreate {
                env,
                name,
                wait,
                keep_until,
            },
            Command::Backup(BackupCommand::Keep {
                env, backup, until, ..
            }) => Request::BackupKeep { env, backup, until },
            Command::Backup(BackupCommand::List { env }) => Request::BackupList { env },
            Command::Backup(BackupCommand::Show { env, backup }) => {
                Request::BackupShow { env, backup }
            }
            Command::Backup(BackupCommand::Delete { env, backup, .. }) => {
                Request::BackupDelete { env, backup }
            }
            Command::Backup(BackupCommand::Link {
                env,
                backup,
                part,
                ttl,
                format,
            }) => Request::BackupLink {
                env,
                backup,
                part,
                format,
                ttl_seconds: Some(ttl.as_secs()),
            },
            Command::Backup(BackupCommand::Download {
                env,
                backup,
                part,
                output,
                format,
            }) => Request::BackupDownload {
                env,
                backup,
                part,
                format: format.or_else(|| cli::download::format_for_name(&output)),
            },
            Command::Fleet(FleetCommand::List) => Request::FleetList,
            Command::Fleet(FleetCommand::Show { host }) => Request::FleetShow { host },
            Command::Fleet(FleetCommand::Forget {
                host,
                delete_backups,
                ..
            }) => Request::FleetForget {
                host,
                delete_backups,
            },
            Command::Job(JobCommand::List) => Request::JobList,
            Command::Job(JobCommand::Show { id }) => Request::JobShow { id },
            Command::Job(JobCommand::Watch { id }) => Request::JobWatch { id },
            Command::Job(JobCommand::Cancel { id }) => Request::JobCancel { id },
            Command::Drill {
                command: Some(DrillCommand::List { env }),
                ..
            } => Request::DrillList { env },
            Command::Drill {
                command: Some(DrillCommand::Show { id }),
                ..
            } => Request::DrillShow { id },
            Command::Drill {
                command: None,
                env,
                backup,
                wait,
                keep,
            } => Request::Drill {
                env: env.unwrap_or_default(),
                backup,
                wait,
                keep,
            },
            Command::Log { env, since, limit } => Request::Log { env, since, limit },
            Command::Import {
                env,
                parts,
                name,
                version,
                wait,
                restore,
                keep_setuid,
                ..
            } => {
                let (urls, files): (Vec<_>, Vec<_>) = parts
                    .into_iter()
                    .partition(|(_, from)| cli::import::is_url(from));
                Request::Import {
                    env,
                    parts: files.into_iter().map(|(part, _)| part).collect(),
                    urls: urls
                        .into_iter()
                        .map(|(part, url)| (part, url.to_string_lossy().into_owned()))
                        .collect(),
                    name,
                    version,
                    wait: wait || restore,
                    keep_setuid,
                }
            }
            Command::Restore {
                env,
                backup,
                from,
                map,
                wait,
                no_safety_backup,
                dry_run,
                ..
            } => Request::Restore {
                env,
                backup,
                from,
                map: map.into_iter().collect(),
                wait,
                no_safety_backup,
                dry_run,
            },
            Command::Verify {
                env,
                backup,
                read_data,
            } => Request::Verify {
                env,
                backup,
                read_data,
            },
            Command::Prune { dry_run } => Request::Prune { dry_run },
            Command::Catalog(CatalogCommand::Rebuild) => Request::CatalogRebuild,
            Command::Completions { .. } | Command::ManPages { .. } => {
                unreachable!("answered without the daemon")
            }
        }
    }
}

/// Commands answered without the daemon: completions and man pages.
fn answer_locally(command: &Command) -> Option<Result<(), CliError>> {
    match command {
        Command::Completions { shell } => {
            let mut stdout = std::io::stdout();
            clap_complete::generate(*shell, &mut Arguments::command(), "envsnapctl", &mut stdout);
            Some(Ok(()))
        }
        Command::ManPages { dir } => Some(
            std::fs::create_dir_all(dir)
                .and_then(|()| clap_mangen::generate_to(Arguments::command(), dir))
                .map_err(|e| {
                    CliError::Io(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", dir.display()),
                    ))
                }),
        ),
        _ => None,
    }
}

fn parse_mapping(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_owned(), to.to_owned()))
        }
        _ => Err(format!(
            "expected SRC=DST (e.g. files:media=files:uploads), got {text:?}"
        )),
    }
}

fn parse_until(text: &str) -> Result<DateTime<Utc>, cli::time::TimeError> {
    cli::time::parse_until(text, Utc::now(), &chrono::Local)
}

fn parse_since(text: &str) -> Result<DateTime<Utc>, cli::time::TimeError> {
    cli::time::parse_since(text, Utc::now(), &chrono::Local)
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("envsnapctl: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(arguments)) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`envsnapctl ... | head`): nobody is left to tell.
        Err(CliError::Io(error)) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("envsnapctl: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(arguments: Arguments) -> Result<(), CliError> {
    if let Some(answered) = answer_locally(&arguments.command) {
        return answered;
    }
    let client = Client::new(cli::resolve_socket(arguments.socket));
    if let Command::Backup(BackupCommand::Delete {
        env,
        backup,
        yes: false,
    }) = &arguments.command
    {
        cli::confirm::require_typed_name(
            backup,
            "backup name",
            &format!("delete backup {backup} of {env}"),
        )?;
    }
    if let Command::Fleet(FleetCommand::Forget {
        host,
        delete_backups: true,
        yes: false,
    }) = &arguments.command
    {
        cli::confirm::require_typed_name(
            host,
            "host name",
            &format!("delete every backup host {host} stored"),
        )?;
    }
    let download_to = match &arguments.command {
        Command::Backup(BackupCommand::Download { output, .. }) => Some(output.clone()),
        _ => None,
    };
    if let Some(output) = download_to {
        let request = arguments.command.request();
        return cli::download::run(&client, request, &output, arguments.json).await;
    }
    if let Command::Import {
        env,
        parts,
        restore,
        yes,
        ..
    } = &arguments.command
    {
        let files: Vec<PathBuf> = parts
            .iter()
            .map(|(_, from)| from.clone())
            .filter(|from| !cli::import::is_url(from))
            .collect();
        let restore = *restore;
        if restore && !yes {
            let what = format!("import into {env} and replace the environment with it");
            cli::confirm::require_typed_name(env, "environment name", &what)?;
        }
        let request = arguments.command.request();
        return cli::import::run(&client, request, &files, restore, arguments.json).await;
    }
    let confirmed = confirmed_restore(&arguments.command);
    let request = arguments.command.request();
    if let Request::Restore {
        env,
        backup,
        dry_run: false,
        ..
    } = &request
        && !confirmed
    {
        // Show what will be replaced before asking.
        let mut plan = request.clone();
        if let Request::Restore { dry_run, wait, .. } = &mut plan {
            (*dry_run, *wait) = (true, false);
        }
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            cli::run(&client, plan, false).await?;
        }
        let what = format!("replace environment {env} with backup {backup}");
        cli::confirm::require_typed_name(env, "environment name", &what)?;
    }
    cli::run(&client, request, arguments.json).await
}

fn confirmed_restore(command: &Command) -> bool {
    matches!(command, Command::Restore { yes: true, .. })
}

#[cfg(test)]
#[path = "envsnapctl/tests.rs"]
mod tests;
