//! The server pepper: the HMAC key under which API key digests are stored. From config
//! (`TOLLGATE_PEPPER`; required for several instances without a shared data directory),
//! or from `<data_dir>/pepper`, created with 256 random bits and mode 0600 on first start.
//! Losing the pepper makes every issued key unusable, which is why it is never rotated
//! silently.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tollgate_core::Secret;

const FILE_NAME: &str = "pepper";

pub fn load_or_create(configured: Option<&Secret>, data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(p) = configured {
        return Ok(p.expose().as_bytes().to_vec());
    }
    let path = data_dir.join(FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            anyhow::ensure!(text.len() >= 32, "{} is too short to be a pepper", path.display());
            Ok(text.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
            let mut bytes = [0u8; 32];
            tollgate_core::ids::fill_random(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut f) => {
                    f.write_all(hex.as_bytes())?;
                    f.sync_all()?;
                    tracing::info!(path = %path.display(), "created a new pepper for key digests");
                    Ok(hex.into_bytes())
                }
                // Another process (the CLI, a second server) created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(None, data_dir),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(None, dir.path()).unwrap();
        let b = load_or_create(None, dir.path()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let configured = Secret::new("x".repeat(40));
        assert_eq!(load_or_create(Some(&configured), dir.path()).unwrap(), configured.expose().as_bytes());
    }
}
