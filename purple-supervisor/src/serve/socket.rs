//! Where `serve` listens and the clients connect, and making that socket
//! safe to listen on: a private directory, mode 0600, and a stale socket of
//! a service that is gone replaced rather than refused.

use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("creating {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} must be a directory of yours that only you can enter (mode 0700, not a symlink): {why}")]
    UnsafeDir { path: String, why: String },
    #[error("another `purple-supervisor serve` already listens on {0}")]
    InUse(String),
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// `$XDG_RUNTIME_DIR/purple/supervisor.sock`, else
/// `/tmp/purple-<uid>/supervisor.sock`.
pub fn default_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_absolute()) {
        Some(runtime) => PathBuf::from(runtime).join("purple"),
        None => PathBuf::from(format!("/tmp/purple-{}", nix::unistd::getuid())),
    };
    dir.join("supervisor.sock")
}

pub fn resolve(explicit: Option<&Path>) -> PathBuf {
    explicit.map_or_else(default_path, Path::to_owned)
}

/// Creates the default directory (0700) or checks an existing one is ours
/// and private: in a shared /tmp, someone else could have made it first.
fn ensure_private_dir(dir: &Path) -> Result<(), SocketError> {
    let unsafe_dir = |why: String| SocketError::UnsafeDir {
        path: dir.display().to_string(),
        why,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(SocketError::CreateDir {
                path: dir.display().to_string(),
                source,
            })
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| unsafe_dir(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".to_owned()));
    }
    if meta.uid() != nix::unistd::getuid().as_raw() {
        return Err(unsafe_dir(format!("it belongs to uid {}", meta.uid())));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {:o}",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Binds the service's socket (mode 0600). A default location's directory
/// is created private; a socket file nobody answers on is a leftover of a
/// service that was killed, and is replaced.
pub fn listen(path: &Path, is_default: bool) -> Result<UnixListener, SocketError> {
    let io = |step, source| SocketError::Io {
        step,
        path: path.display().to_string(),
        source,
    };
    if is_default {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
    }
    match UnixStream::connect(path) {
        Ok(_) => return Err(SocketError::InUse(path.display().to_string())),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            // Only a socket is ever removed: a regular file someone put
            // there is not ours to delete.
            let meta = std::fs::symlink_metadata(path).map_err(|e| io("inspecting", e))?;
            if !std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) {
                return Err(io(
                    "refusing to replace",
                    std::io::Error::new(ErrorKind::AlreadyExists, "not a socket"),
                ));
            }
            std::fs::remove_file(path).map_err(|e| io("removing the stale socket", e))?;
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| io("listening on", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("setting the mode of", e))?;
    Ok(listener)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let first = listen(&path, false).unwrap();
        assert!(matches!(listen(&path, false), Err(SocketError::InUse(_))));
        drop(first);
        let second = listen(&path, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(second);
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(
            listen(&file, false).is_err(),
            "a regular file is left alone"
        );
        assert!(file.exists());
    }

    #[test]
    fn the_default_directory_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("purple");
        listen(&private.join("s.sock"), true).unwrap();
        let mode = std::fs::metadata(&private).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            listen(&open.join("s.sock"), true),
            Err(SocketError::UnsafeDir { .. })
        ));
    }
}
