//! The quick-start demo environment: a small app directory and a SQLite database,
//! created under the state directory when envsnapd runs without a config file.

use std::path::Path;

use crate::config::{Config, PartSource};

/// Creates the demo environment's files if they are missing.
pub fn prepare(config: &Config) -> std::io::Result<()> {
    for env in config.environments.values() {
        for part in env.parts() {
            match part.source {
                PartSource::Tree { path, .. } if !path.exists() => write_demo_app(&path)?,
                PartSource::Database(db) => {
                    if let Some(path) = db.path.as_deref().filter(|p| !p.exists()) {
                        create_demo_database(path).map_err(std::io::Error::other)?;
                    }
                }
                PartSource::Tree { .. } => {}
            }
        }
    }
    Ok(())
}

fn write_demo_app(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("static"))?;
    std::fs::write(dir.join("index.html"), "<h1>envsnap demo app</h1>\n")?;
    std::fs::write(dir.join("static/app.css"), "h1 { color: teal; }\n")?;
    std::fs::write(dir.join("VERSION"), "1.0\n")
}

fn create_demo_database(path: &Path) -> rusqlite::Result<()> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT NOT NULL, qty INTEGER NOT NULL);
         INSERT INTO orders (item, qty) VALUES ('coffee', 2), ('tea', 1), ('cake', 3);",
    )
}
