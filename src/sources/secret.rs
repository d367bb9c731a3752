//! Passwords for the database tools. A [`SecretFile`] holds one for a tool run
//! (PGPASSFILE, `--defaults-extra-file`) in a 0600 file that is removed when dropped.
//! Passwords never go on argv (other users see it in `ps`) and are never logged.

use std::io;
use std::path::{Path, PathBuf};

/// Why a password could not be read or handed to a tool.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read the password file {}: {source}", path.display())]
    ReadPassword { path: PathBuf, source: io::Error },
    /// The credentials file (or its directory) could not be written.
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Reads a password file; a trailing newline is not part of the password.
pub(super) fn read_password(path: &Path) -> Result<String, SecretError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::ReadPassword {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// A file only its owner can read, holding credentials for one tool run; removed
/// when dropped.
pub(super) struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    pub(super) fn create(
        dir: &Path,
        prefix: &str,
        contents: &str,
    ) -> Result<SecretFile, SecretError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SecretError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(failed(dir))?;
        let mut random = [0u8; 6];
        getrandom::fill(&mut random).expect("the operating system's random source failed");
        let path = dir.join(format!("{prefix}-{}", hex::encode(random)));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed(&path))?;
        let secret = SecretFile { path };
        file.write_all(contents.as_bytes())
            .and_then(|()| file.flush())
            .map_err(failed(&secret.path))?;
        Ok(secret)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let secret = SecretFile::create(dir.path(), "pgpass", "*:*:*:*:pw\n").unwrap();
            let mode = std::fs::metadata(secret.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
            secret.path().to_path_buf()
        };
        assert!(!path.exists());
    }
}
