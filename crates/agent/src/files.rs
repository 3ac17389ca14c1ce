//! The agent's state under `<data-dir>`: what must survive a restart (the node password and
//! id, the cluster CA, the node certificate, the kubeconfig, the last known servers).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use capstan_machinery::join::Peer;

use super::AgentError;

/// The node password, generated once.
pub const PASSWORD: &str = "node/password";
/// The `--with-node-id` suffix, generated once.
pub const NODE_ID: &str = "node/id";
/// The cluster CA (verified by the token's hash, or trusted on first use).
pub const SERVER_CA: &str = "agent/server-ca.crt";
/// The node's client certificate.
pub const CLIENT_CERT: &str = "agent/client-node.crt";
/// Its key.
pub const CLIENT_KEY: &str = "agent/client-node.key";
/// The kubeconfig for local clients (through the load balancer).
pub const KUBECONFIG: &str = "agent/kubeconfig";
/// The last known servers.
pub const SERVERS: &str = "agent/servers.json";

#[derive(Clone)]
pub struct StateFiles {
    root: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedServers {
    peers: Vec<Peer>,
}

impl StateFiles {
    pub fn new(root: &Path) -> StateFiles {
        StateFiles {
            root: root.to_path_buf(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.root.join(file)
    }

    /// The stored password, or a new one (32 random bytes, hex) stored with mode 0600.
    pub fn node_password(&self) -> Result<String, AgentError> {
        self.generated_once(PASSWORD, 32)
    }

    /// The stored node id suffix, or a new one (8 hex digits).
    pub fn node_id(&self) -> Result<String, AgentError> {
        self.generated_once(NODE_ID, 4)
    }

    fn generated_once(&self, file: &str, bytes: usize) -> Result<String, AgentError> {
        let path = self.path(file);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(AgentError::File {
                    what: "cannot read",
                    path,
                    source,
                });
            }
        }
        let mut random = vec![0u8; bytes];
        rand::fill(&mut random[..]);
        let value = hex::encode(random);
        write(&path, &value, 0o600)?;
        Ok(value)
    }

    pub fn load_ca(&self) -> Option<String> {
        std::fs::read_to_string(self.path(SERVER_CA))
            .ok()
            .filter(|pem| !pem.trim().is_empty())
    }

    pub fn save_ca(&self, pem: &str) -> Result<(), AgentError> {
        write(&self.path(SERVER_CA), pem, 0o644)
    }

    pub fn save_client(&self, cert_pem: &str, key_pem: &str) -> Result<(), AgentError> {
        write(&self.path(CLIENT_KEY), key_pem, 0o600)?;
        write(&self.path(CLIENT_CERT), cert_pem, 0o644)
    }

    pub fn save_kubeconfig(&self, text: &str) -> Result<(), AgentError> {
        write(&self.path(KUBECONFIG), text, 0o600)
    }

    /// The saved servers; none if the file is missing or unreadable.
    pub fn load_peers(&self) -> Vec<Peer> {
        std::fs::read(self.path(SERVERS))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SavedServers>(&bytes).ok())
            .map(|saved| saved.peers)
            .unwrap_or_default()
    }

    pub fn save_peers(&self, peers: &[Peer]) -> Result<(), AgentError> {
        let saved = SavedServers {
            peers: peers.to_vec(),
        };
        let text = serde_json::to_string_pretty(&saved).unwrap_or_default();
        write(&self.path(SERVERS), &text, 0o644)
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed over it) with `mode`.
fn write(path: &Path, text: &str, mode: u32) -> Result<(), AgentError> {
    let fail = |what, source| AgentError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|source| fail("cannot create the directory of", source))?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(|source| fail("cannot create", source))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| fail("cannot write", source))?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
        .map_err(|source| fail("cannot set the mode of", source))?;
    std::fs::rename(&temporary, path).map_err(|source| fail("cannot replace", source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    #[test]
    fn password_is_private_and_stable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let files = StateFiles::new(dir.path());
        let first = files.node_password().expect("generated");
        assert_eq!(first.len(), 64);
        assert_eq!(files.node_password().expect("read back"), first);
        let mode = std::fs::metadata(dir.path().join(PASSWORD))
            .expect("exists")
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = files.node_id().expect("id");
        assert_eq!(id.len(), 8);
        assert_eq!(files.node_id().expect("id again"), id);
    }
}
