//! A thin command-line driver of the storage engine, for benchmarks (benches/compare.sh).
//!
//! `envsnap-engine init REPO`, `backup REPO --state DIR --env ENV --tree NAME=DIR
//! --stream NAME=FILE`, `restore REPO --state DIR --env ENV --backup latest|ID --part
//! tree:NAME --into DIR` (or `--part stream:NAME --out FILE`), `stats REPO`,
//! `prune REPO --state DIR --env ENV --delete-oldest N`. Each backup uses the
//! environment's latest backup as its parent.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use envsnap::catalog::Catalog;
use envsnap::repo::archiver::TreeOptions;
use envsnap::repo::crypto::Keys;
use envsnap::repo::manifest::BackupMeta;
use envsnap::repo::{InitOptions, Repository};
use envsnap::store::Store;
use tokio_util::sync::CancellationToken;

const HOST: &str = "bench";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init {
        repo: PathBuf,
    },
    Backup {
        repo: PathBuf,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long = "tree", value_parser = name_value)]
        trees: Vec<(String, PathBuf)>,
        #[arg(long = "stream", value_parser = name_value)]
        streams: Vec<(String, PathBuf)>,
    },
    Restore {
        repo: PathBuf,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long, default_value = "latest")]
        backup: String,
        #[arg(long)]
        part: String,
        #[arg(long)]
        into: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    Stats {
        repo: PathBuf,
    },
    /// Deletes the environment's N oldest backups and reclaims their data.
    Prune {
        repo: PathBuf,
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        env: String,
        #[arg(long)]
        delete_oldest: usize,
    },
}

fn name_value(text: &str) -> Result<(String, PathBuf), String> {
    let (name, value) = text.split_once('=').ok_or("expected NAME=PATH")?;
    Ok((name.to_owned(), PathBuf::from(value)))
}

fn store(repo: &std::path::Path) -> Result<Store> {
    let dir = std::path::absolute(repo)?;
    Ok(Store::from_url(&format!("file://{}", dir.display()))?)
}

async fn open(repo: &std::path::Path, state: &std::path::Path) -> Result<Repository> {
    std::fs::create_dir_all(state)?;
    let catalog = Catalog::open(&state.join("catalog.sqlite"))?;
    let repository = Repository::open(&store(repo)?, HOST, Keys::none(), catalog).await?;
    if repository.catalog().chunk_count()? == 0 {
        repository.rebuild_index().await?;
    }
    Ok(repository)
}

#[tokio::main]
async fn main() -> Result<()> {
    envsnap::memory::tune_allocator();
    match Cli::parse().command {
        Command::Init { repo } => {
            Repository::init(&store(&repo)?, HOST, &Keys::none(), InitOptions::default()).await?
        }
        Command::Backup {
            repo,
            state,
            env,
            trees,
            streams,
        } => {
            let repository = open(&repo, &state).await?;
            let parent = repository.list_manifests(Some(&env)).await?.pop();
            let mut writer = repository.start_backup(CancellationToken::new()).await?;
            for (name, dir) in trees {
                let part = format!("tree:{name}");
                let parent = parent.as_ref().and_then(|m| m.part(&part)).cloned();
                writer
                    .add_tree(
                        &part,
                        dir,
                        TreeOptions {
                            parent,
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            for (name, file) in streams {
                let reader = tokio::fs::File::open(&file)
                    .await
                    .with_context(|| file.display().to_string())?;
                writer
                    .add_stream(&format!("stream:{name}"), "file", reader)
                    .await?;
            }
            let now = chrono::Utc::now();
            let meta = BackupMeta {
                env,
                name: now
                    .format("%Y%m%d-%H%M%S%.3f")
                    .to_string()
                    .replace('.', "-"),
                version: "bench".into(),
                trigger: "manual".into(),
                user: "bench".into(),
                expires: None,
            };
            let manifest = writer.commit(meta).await?;
            let size: u64 = manifest.parts.iter().map(|p| p.size).sum();
            let stored: u64 = manifest.parts.iter().map(|p| p.stored).sum();
            println!(
                "{}",
                serde_json::json!({ "backup": manifest.id, "size": size, "stored": stored })
            );
        }
        Command::Restore {
            repo,
            state,
            env,
            backup,
            part,
            into,
            out,
        } => {
            let repository = open(&repo, &state).await?;
            let manifest = if backup == "latest" {
                repository
                    .list_manifests(Some(&env))
                    .await?
                    .pop()
                    .context("no backup")?
            } else {
                repository.load_manifest(&env, &backup).await?
            };
            match (into, out) {
                (Some(dir), None) => {
                    let plan = repository.restore_tree(&manifest, &part, &dir).await?;
                    println!("{}", serde_json::to_string(&plan)?);
                }
                (None, Some(file)) => {
                    let mut output = tokio::fs::File::create(&file).await?;
                    let written = repository
                        .read_stream(&manifest, &part, &mut output)
                        .await?;
                    println!("{}", serde_json::json!({ "written": written }));
                }
                _ => bail!("give exactly one of --into DIR (tree) or --out FILE (stream)"),
            }
        }
        Command::Prune {
            repo,
            state,
            env,
            delete_oldest,
        } => {
            let repository = open(&repo, &state).await?;
            let manifests = repository.list_manifests(Some(&env)).await?;
            let doomed = &manifests[..delete_oldest.min(manifests.len())];
            let report = repository.prune(doomed).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Stats { repo } => {
            let objects = store(&repo)?.scoped(HOST).list("").await?;
            let bytes: u64 = objects.iter().map(|o| o.size).sum();
            println!(
                "{}",
                serde_json::json!({ "bytes": bytes, "objects": objects.len() })
            );
        }
    }
    Ok(())
}
