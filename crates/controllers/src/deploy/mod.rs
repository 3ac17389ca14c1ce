//! Auto-deployed manifests, as K3s does with `/var/lib/rancher/k3s/server/manifests`.
//!
//! Every server writes the bundled manifests (the repo's `manifests/`, embedded at build
//! time) to `<data-dir>/server/manifests/` at start ([`write_bundled`]); operators drop
//! their own `*.yaml`/`*.yml`/`*.json` files beside them. The cluster leader alone runs
//! [`run`]: it scans its own directory at start and every 2 s (mtime and size, then the
//! SHA-256 of files that look changed) and applies each changed file by server-side apply
//! with field manager `capstan-deploy`, so servers never fight over objects. The data dir is
//! per server, so in HA the files must be on every server that may lead (as in K3s): a
//! new leader applies what its own directory holds.
//!
//! Each file has a cluster-scoped `Addon` (`addons.capstan.io/v1`, named after the file)
//! holding its path and checksum and, in status, the objects applied from it, the server
//! that applied it and the last error. An unchanged checksum is not applied again, even by a
//! new leader. Objects that leave a file are pruned; a file beside a `<file>.skip` is left
//! alone; a file deleted by hand takes its Addon with it but leaves its objects; a bundled
//! manifest named in `--disable` is removed and so are its objects. A file that fails
//! (invalid YAML, an unknown kind, a namespace that does not exist yet) is retried with a
//! back-off, and its error lands on the Addon's status and in a Warning Event; other files
//! go on regardless.

mod addon;
mod apply;
mod bundled;
mod manifest;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use capstan_machinery::meta;
use serde_json::Value;

use super::ControllerError;
use apply::ObjectRef;
use capstan_apiserver::registry::{ObjectStore, Registry, RegistryError};

pub use addon::{APPLIED_BY_ANNOTATION, EVENT_NAMESPACE, FAILED_REASON};
pub use apply::FIELD_MANAGER;
pub use bundled::{bundled_names, manifests_dir, write_bundled};
pub use manifest::addon_name;

/// How often the directory is scanned.
const SCAN_EVERY: Duration = Duration::from_secs(2);
/// The first retry delay of a failing file; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest retry delay of a failing file.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// What the deployer needs to know.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    /// The directory of manifests (`<data-dir>/server/manifests`).
    pub dir: PathBuf,
    /// Addon names switched off (`--disable`): their objects are deleted.
    pub disable: Vec<String>,
    /// This server's identity, recorded as `status.appliedBy`.
    pub server_id: String,
}

/// What this leadership term knows about one file.
#[derive(Debug)]
struct FileState {
    /// Modification time and size when last looked at.
    fingerprint: (SystemTime, u64),
    /// SHA-256 of the content last looked at.
    checksum: String,
    /// Whether that content is applied.
    applied: bool,
    /// Whether that content cannot be read or parsed: no retry until the file changes.
    broken: bool,
    /// Failures of that content in a row.
    failures: u32,
    /// No retry before this.
    retry_at: Instant,
    /// The last error reported (an Event is recorded when it changes).
    last_error: Option<String>,
}

/// Scans and applies until a datastore call fails (the supervisor restarts it).
pub(super) async fn run(
    objects: ObjectStore,
    registry: Arc<Registry>,
    settings: DeploySettings,
) -> Result<(), ControllerError> {
    let mut deployer = Deployer {
        objects,
        registry,
        settings,
        files: HashMap::new(),
        refused: HashSet::new(),
    };
    loop {
        deployer.remove_disabled().await?;
        deployer.scan().await?;
        tokio::time::sleep(SCAN_EVERY).await;
    }
}

struct Deployer {
    objects: ObjectStore,
    registry: Arc<Registry>,
    settings: DeploySettings,
    files: HashMap<String, FileState>,
    /// Links refused for pointing out of the directory (each is logged once).
    refused: HashSet<PathBuf>,
}

impl Deployer {
    /// Deletes the objects and Addons of disabled manifests (one read per disabled name when
    /// there is nothing to do).
    async fn remove_disabled(&mut self) -> Result<(), RegistryError> {
        for name in &self.settings.disable {
            let Some(found) = addon::get(&self.objects, &self.registry, name).await? else {
                continue;
            };
            for object in addon::listed_objects(&found) {
                apply::delete_object(&self.objects, &self.registry, &object).await?;
            }
            addon::delete(&self.objects, &self.registry, name).await?;
            tracing::info!(addon = %name, "disabled: deleted the addon and its objects");
        }
        Ok(())
    }

    /// The manifest files of the directory by Addon name, and the names with a `.skip`.
    fn list_files(&mut self) -> (BTreeMap<String, PathBuf>, BTreeSet<String>) {
        let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut skipped = BTreeSet::new();
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&self.settings.dir) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(error) => {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.settings.dir.display(), %error, "cannot read the manifests directory");
                }
                Vec::new()
            }
        };
        paths.sort();
        let dir = std::fs::canonicalize(&self.settings.dir).ok();
        for path in paths {
            if !manifest::is_manifest(&path) || !path.is_file() {
                continue;
            }
            // A link may point at another file of the directory, never out of it.
            let target = std::fs::canonicalize(&path).ok();
            if target.is_none() || target.as_deref().and_then(Path::parent) != dir.as_deref() {
                if self.refused.insert(path.clone()) {
                    tracing::warn!(file = %path.display(), "ignoring a manifest link that points outside the manifests directory");
                }
                continue;
            }
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = addon_name(&file_name);
            if self.settings.disable.contains(&name) {
                continue;
            }
            let mut skip = path.clone().into_os_string();
            skip.push(".skip");
            if Path::new(&skip).exists() {
                skipped.insert(name);
                continue;
            }
            if let Some(first) = files.get(&name) {
                tracing::warn!(file = %path.display(), other = %first.display(), addon = %name, "two manifest files map to one addon name; ignoring the second");
                continue;
            }
            files.insert(name, path);
        }
        (files, skipped)
    }

    /// One pass over the directory.
    async fn scan(&mut self) -> Result<(), RegistryError> {
        let (files, skipped) = self.list_files();
        for (name, path) in &files {
            self.check_file(name, path).await?;
        }
        self.files.retain(|name, _| files.contains_key(name));
        // Addons whose file is gone: the file was deleted by hand.
        for found in addon::list(&self.objects, &self.registry).await? {
            let Some(name) = meta(&found).name() else {
                continue;
            };
            let disabled = self.settings.disable.iter().any(|d| d == name);
            if files.contains_key(name) || skipped.contains(name) || disabled {
                continue;
            }
            let count = addon::listed_objects(&found).len();
            tracing::info!(addon = %name, source = found["spec"]["source"].as_str().unwrap_or(""), objects = count, "manifest file removed: deleting its addon and leaving its {count} objects in place");
            addon::delete(&self.objects, &self.registry, name).await?;
        }
        Ok(())
    }

    /// Applies `path` if it changed since it was last applied.
    async fn check_file(&mut self, name: &str, path: &Path) -> Result<(), RegistryError> {
        let Ok(metadata) = std::fs::metadata(path) else {
            return Ok(());
        };
        let fingerprint = (
            metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            metadata.len(),
        );
        if let Some(state) = self.files.get(name)
            && state.fingerprint == fingerprint
            && (state.applied || state.broken || Instant::now() < state.retry_at)
        {
            return Ok(());
        }
        let content = if metadata.len() > manifest::MAX_MANIFEST_BYTES {
            Err(manifest::ManifestError::TooLarge {
                file: file_name(path),
                size: metadata.len(),
            })
        } else {
            match std::fs::read(path) {
                Ok(content) => Ok(content),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "cannot read a manifest file");
                    return Ok(());
                }
            }
        };
        let checksum = match &content {
            Ok(content) => manifest::checksum(content),
            // Not read: its size stands for its content, so a changed file is looked at again.
            Err(_) => format!("unread-{}", metadata.len()),
        };
        let previous = addon::get(&self.objects, &self.registry, name).await?;
        match self.files.get_mut(name) {
            Some(state) if state.checksum == checksum => {
                state.fingerprint = fingerprint;
                if state.applied || state.broken || Instant::now() < state.retry_at {
                    return Ok(());
                }
            }
            Some(state) => {
                // New content: a fresh start for the back-off.
                *state = FileState::new(fingerprint, checksum.clone());
            }
            None => {
                let applied = previous.as_ref().is_some_and(|found| {
                    found["spec"]["checksum"] == checksum.as_str()
                        && found["status"]["error"].as_str().is_none_or(str::is_empty)
                        && found["status"]["appliedBy"].is_string()
                });
                let mut state = FileState::new(fingerprint, checksum.clone());
                state.applied = applied;
                self.files.insert(name.to_string(), state);
                if applied {
                    return Ok(());
                }
            }
        }
        self.apply_file(name, path, &content, &checksum, previous.as_ref())
            .await
    }

    /// Applies every object of a file, prunes what left it, and records the outcome.
    async fn apply_file(
        &mut self,
        name: &str,
        path: &Path,
        content: &Result<Vec<u8>, manifest::ManifestError>,
        checksum: &str,
        previous: Option<&Value>,
    ) -> Result<(), RegistryError> {
        let before = previous.map(addon::listed_objects).unwrap_or_default();
        let mut applied: Vec<ObjectRef> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        let parsed = match content {
            Ok(content) => manifest::objects(&file_name(path), content),
            Err(error) => Err(error.clone()),
        };
        // What is wrong with the file itself does not heal by retrying: it waits for the
        // file to change.
        let broken = parsed.is_err();
        match parsed {
            Err(error) => errors.push(error.to_string()),
            Ok(found) => {
                for object in &found {
                    match apply::apply_object(&self.objects, &self.registry, object).await {
                        Ok(reference) => {
                            if !applied.contains(&reference) {
                                applied.push(reference);
                            }
                        }
                        Err(error) => errors.push(error.to_string()),
                    }
                }
            }
        }
        let listed = if errors.is_empty() {
            for gone in before.iter().filter(|o| !applied.contains(o)) {
                match apply::delete_object(&self.objects, &self.registry, gone).await {
                    Ok(()) => {
                        tracing::info!(addon = %name, object = %gone, "pruned an object that left its manifest")
                    }
                    Err(error) => errors.push(format!("cannot prune {gone}: {error}")),
                }
            }
            applied.clone()
        } else {
            // Keep listing what the file made before, so a later success can prune it.
            let mut union: Vec<ObjectRef> = before.clone();
            union.extend(applied.iter().cloned());
            union.sort();
            union.dedup();
            union
        };
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        let source = path.display().to_string();
        let outcome = addon::Outcome {
            source: &source,
            checksum,
            objects: &listed,
            applied_by: &self.settings.server_id,
            error: error.as_deref(),
        };
        let recorded = addon::record(&self.objects, &self.registry, name, &outcome).await?;
        let Some(state) = self.files.get_mut(name) else {
            return Ok(());
        };
        match error {
            None => {
                tracing::info!(addon = %name, file = %source, objects = listed.len(), "applied a manifest");
                state.applied = true;
                state.failures = 0;
                state.last_error = None;
            }
            Some(error) => {
                let delay = FIRST_RETRY
                    .saturating_mul(1 << state.failures.min(5))
                    .min(MAX_RETRY);
                state.applied = false;
                state.broken = broken;
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Instant::now() + delay;
                tracing::warn!(addon = %name, file = %source, %error, retry_in = ?delay, "cannot apply a manifest");
                if state.last_error.as_deref() != Some(error.as_str()) {
                    if let Err(event_error) =
                        addon::warn(&self.objects, &self.registry, &recorded, &error).await
                    {
                        tracing::warn!(addon = %name, error = %event_error, "cannot record the failure Event");
                    }
                    state.last_error = Some(error);
                }
            }
        }
        Ok(())
    }
}

/// The file name of `path`, as messages show it.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl FileState {
    fn new(fingerprint: (SystemTime, u64), checksum: String) -> FileState {
        FileState {
            fingerprint,
            checksum,
            applied: false,
            broken: false,
            failures: 0,
            retry_at: Instant::now(),
            last_error: None,
        }
    }
}
