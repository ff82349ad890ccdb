//! The server pepper: the HMAC key under which API key digests are stored. From config
//! (`pepper` / `TOLLGATE_PEPPER`; required for several instances without a shared data
//! directory), or from `<data_dir>/pepper`, created with 256 random bits and mode 0600 on
//! first start. Losing the pepper makes every issued key unusable, which is why it is
//! never rotated silently.
//!
//! Invariants: the pepper file appears whole or not at all (written to a temporary file,
//! then hard-linked into place, which fails rather than replaces when another process got
//! there first), so a process starting beside another never reads it half written. The
//! database remembers the pepper's fingerprint (`deployment_settings.pepper_fingerprint`,
//! an HMAC under the pepper, never the pepper or a plain hash of it); a process with
//! another pepper refuses to start instead of answering every key with 401.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use tollgate_core::Secret;
use tollgate_core::key::Digester;
use tollgate_store::Store;

const FILE_NAME: &str = "pepper";

/// The deployment setting that holds the pepper's fingerprint.
pub const FINGERPRINT_SETTING: &str = "pepper_fingerprint";

/// The HMAC label of the fingerprint: a derivation of its own, unlike any key digest.
const FINGERPRINT_LABEL: &[u8] = b"tollgate pepper fingerprint v1";

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
            let hex = hex(&bytes);
            if publish(data_dir, &path, hex.as_bytes())? {
                tracing::info!(path = %path.display(), "created a new pepper for key digests");
                Ok(hex.into_bytes())
            } else {
                // Another process (the CLI, a second server) created it first: use theirs.
                load_or_create(None, data_dir)
            }
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `contents` to `path` whole: into a private temporary file first, then linked
/// into place. Returns false, leaving `path` alone, if it already exists.
fn publish(data_dir: &Path, path: &Path, contents: &[u8]) -> anyhow::Result<bool> {
    let tmp = data_dir.join(format!(".{FILE_NAME}.{}", tollgate_core::ids::new_id("tmp")));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // The new name must survive a crash too.
            #[cfg(unix)]
            if let Ok(dir) = std::fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// The pepper's fingerprint as stored in the database: HMAC-SHA256(pepper, a fixed
/// label), in hex. It tells peppers apart and reveals nothing of them.
pub fn fingerprint(digester: &Digester) -> String {
    hex(&digester.keyed(&[FINGERPRINT_LABEL]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records this pepper's fingerprint if the database has none yet (the first start, or a
/// database from before fingerprints), and refuses a pepper other than the recorded one:
/// every key in the database was digested under that one, so each would be refused.
pub async fn check_fingerprint(
    store: &Store,
    digester: &Digester,
    configured: bool,
    data_dir: &Path,
) -> anyhow::Result<()> {
    let ours = fingerprint(digester);
    let stored = store.setting_or_insert(FINGERPRINT_SETTING, &ours).await.context("reading the pepper fingerprint")?;
    if stored == ours {
        return Ok(());
    }
    let source = if configured {
        "the `pepper` setting (config file or TOLLGATE_PEPPER)".to_owned()
    } else {
        format!("{} (no `pepper` setting or TOLLGATE_PEPPER is set)", data_dir.join(FILE_NAME).display())
    };
    anyhow::bail!(
        "this instance's pepper, from {source}, is not the pepper this database's API keys were issued \
         under (its fingerprint differs from deployment setting `{FINGERPRINT_SETTING}`): every key would \
         be refused. Give every instance on this database the same pepper: set `pepper` in the config \
         file or TOLLGATE_PEPPER to the other instances' value, or copy their <data_dir>/pepper file \
         into {}.",
        data_dir.display()
    )
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
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["pepper"], "no temporary file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("pepper")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// Processes starting together on a new data directory all read one whole pepper.
    #[test]
    fn racing_creators_agree_on_one_whole_pepper() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(8);
            let peppers: Vec<Vec<u8>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            load_or_create(None, dir.path()).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(peppers.iter().all(|p| p == &peppers[0] && p.len() == 64));
        }
    }

    #[test]
    fn the_fingerprint_depends_on_the_pepper_and_is_not_a_plain_hash() {
        let a = fingerprint(&Digester::new(b"pepper-a"));
        assert_eq!(a.len(), 64);
        assert_eq!(a, fingerprint(&Digester::new(b"pepper-a")));
        assert_ne!(a, fingerprint(&Digester::new(b"pepper-b")));
        use sha2::Digest as _;
        let plain = hex(&sha2::Sha256::digest(b"pepper-a"));
        assert_ne!(a, plain);
    }
}
