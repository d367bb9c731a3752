//! The import job: archives made elsewhere become a backup with trigger `import`.
//!
//! The client passed one open file per part with the request (`api/import.rs` holds them in
//! the runner until the job runs), or named a URL the job fetches. Each is decompressed and checked as it is stored
//! (`import.rs`): a tree part's tar archive is unpacked, entry by entry, into a
//! private staging directory and archived from there like a live directory; a
//! database part's dump is stored as a stream part in its native format. The first
//! problem fails the job, and, as for any backup, nothing is listed and what was
//! uploaded is deleted. The backup records the version given with the import, else
//! the environment's current one, so that a later restore passes the version check.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::runner::{ImportPart, ImportSource};
use crate::catalog::JobRecord;
use crate::config::{EnvConfig, PartSource};
use crate::context::Context;
use crate::repo::RepoError;
use crate::repo::archiver::TreeOptions;
use crate::repo::manifest::{BackupMeta, Manifest};
use crate::repo::writer::BackupWriter;

/// An import job's arguments, stored with it in the catalog. Its sources are held
/// by the runner under `token` (never stored: a URL may carry a signature).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImportArgs {
    /// The version the backup records (default: the environment's current one).
    pub version: Option<String>,
    pub token: String,
    /// For a caller who is not root: every entry of a tree becomes theirs (uid, gid),
    /// without setuid/setgid bits or extended attributes.
    pub owner: Option<(u32, u32)>,
    /// Root's import keeps the archives' setuid and setgid bits (dropped otherwise).
    #[serde(default)]
    pub keep_setuid: bool,
}

pub async fn run(ctx: &Arc<Context>, job: &JobRecord, cancel: CancellationToken) {
    let env = job.env.clone().unwrap_or_default();
    let name = job.backup.clone().unwrap_or_default();
    let args = args_of(ctx, job.id).await;
    let outcome = match ctx.runner.take_import(&args.token) {
        Some(sources) => import(ctx, job, &env, &name, &args, sources, &cancel).await,
        None => Err(RepoError::Source(
            "the import's files were lost when the daemon restarted; run the import again".into(),
        )),
    };
    super::backup::finish(ctx, job, &env, &name, outcome).await;
}

/// The arguments of import job `id` (defaults if unreadable).
pub async fn args_of(ctx: &Context, id: i64) -> ImportArgs {
    super::args::job_args(ctx, id).await.unwrap_or_default()
}

async fn import(
    ctx: &Arc<Context>,
    job: &JobRecord,
    env: &str,
    name: &str,
    args: &ImportArgs,
    sources: Vec<ImportPart>,
    cancel: &CancellationToken,
) -> Result<Manifest, RepoError> {
    let config = ctx.config();
    let env_config = config
        .env(env)
        .ok_or_else(|| RepoError::Source(format!("environment {env} is no longer in the config")))?
        .clone();
    let version = match args.version.clone() {
        Some(version) => version,
        None => env_config
            .version
            .read(config.daemon.command_timeout)
            .await
            .map_err(|e| RepoError::Source(format!("reading the version of {env}: {e}")))?,
    };
    let how = HowToStore {
        args,
        scratch: config.daemon.state_dir.join("tmp"),
        job: job.id,
        max_size: config.import.max_size,
    };
    let expiry = |now| {
        chrono::Duration::from_std(env_config.retention)
            .ok()
            .map(|r| now + r)
    };
    let mut writer = ctx
        .repo
        .start_backup_expiring(cancel.clone(), expiry(ctx.clock.now()))
        .await?;
    for (part, source) in sources {
        let stored = store_part(&mut writer, &env_config, &part, source, &how).await;
        if let Err(e) = stored {
            writer.abort().await;
            return Err(if cancel.is_cancelled() {
                RepoError::Cancelled
            } else {
                e
            });
        }
    }
    let expires = expiry(ctx.clock.now());
    writer
        .commit(BackupMeta {
            env: env.to_owned(),
            name: name.to_owned(),
            version,
            trigger: "import".to_owned(),
            user: job.user.clone(),
            expires,
        })
        .await
}

/// What every part of one import is stored with.
struct HowToStore<'a> {
    args: &'a ImportArgs,
    /// Where archives are unpacked (`<state_dir>/tmp`).
    scratch: std::path::PathBuf,
    job: i64,
    /// `import.max_size`.
    max_size: u64,
}

/// Checks and stores one file as the part `part` of the environment.
async fn store_part(
    writer: &mut BackupWriter,
    env: &EnvConfig,
    part: &str,
    source: ImportSource,
    how: &HowToStore<'_>,
) -> Result<(), RepoError> {
    let refused = |message: String| RepoError::Source(format!("importing {part}: {message}"));
    let target = env
        .parts()
        .into_iter()
        .find(|p| p.name == part)
        .ok_or_else(|| refused(format!("environment {} has no such part", env.name)))?;
    let input = match source {
        ImportSource::File(fd) => crate::import::from_file(std::fs::File::from(fd))
            .await
            .map_err(|e| refused(format!("cannot read the file: {e}")))?,
        ImportSource::Url(url) => crate::import::from_url(&url).await.map_err(|e| {
            refused(format!(
                "cannot fetch {}: {e}",
                crate::store::redact_url(&url)
            ))
        })?,
    };
    match &target.source {
        PartSource::Tree { .. } => {
            let staging =
                Staging::create(&how.scratch, how.job).map_err(|e| refused(e.to_string()))?;
            let root = staging.path.join("root");
            std::fs::create_dir(&root).map_err(|e| refused(format!("{}: {e}", root.display())))?;
            let options = crate::import::UnpackOptions {
                owner: how.args.owner,
                keep_setuid: how.args.keep_setuid,
                max_size: how.max_size,
            };
            crate::import::unpack_tar(input, root.clone(), options)
                .await
                .map_err(refused)?;
            let options = TreeOptions {
                parent: None,
                exclude: Vec::new(),
            };
            writer.add_tree(part, root, options).await?;
        }
        PartSource::Database(db) => {
            let dump = crate::import::checked_dump(input, db.kind, how.max_size)
                .await
                .map_err(refused)?;
            writer
                .add_stream(part, crate::sources::format_for(db.kind), dump)
                .await
                .map_err(|e| match e {
                    RepoError::InPart { source, .. } => refused(source.to_string()),
                    other => other,
                })?;
        }
    }
    Ok(())
}

/// A private (0700) directory an archive is unpacked into, below it at `root` (whose
/// metadata the archive sets); removed when dropped.
struct Staging {
    path: std::path::PathBuf,
}

/// A staging directory that could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
struct StagingError {
    path: String,
    source: std::io::Error,
}

impl Staging {
    fn create(scratch: &Path, job: i64) -> Result<Staging, StagingError> {
        use std::os::unix::fs::DirBuilderExt;
        let failed = |path: &Path| {
            let path = path.display().to_string();
            move |source| StagingError { path, source }
        };
        std::fs::create_dir_all(scratch).map_err(failed(scratch))?;
        let path = scratch.join(format!("import-{job}"));
        let _ = std::fs::remove_dir_all(&path); // a leftover of an interrupted run
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(failed(&path))?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
