//! The manifests shipped in the binary (the repo's `manifests/`, embedded by `build.rs`),
//! written to `<data-dir>/server/manifests/` at every start.

use std::path::{Path, PathBuf};

use super::manifest::addon_name;

/// `(file name, content)` of every bundled manifest.
pub(super) const BUNDLED: &[(&str, &[u8])] =
    include!(concat!(env!("OUT_DIR"), "/bundled_manifests.rs"));

/// The names of the bundled manifests' Addons (for `--disable`).
pub fn bundled_names() -> Vec<String> {
    BUNDLED.iter().map(|(file, _)| addon_name(file)).collect()
}

/// Where the deployer looks for manifests: `<data-dir>/server/manifests`.
pub fn manifests_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("server").join("manifests")
}

/// Writes every bundled manifest to `dir` (overwriting an older copy), except those named in
/// `disable`, whose file is removed instead. Files of other names (the user's) are never
/// touched.
pub fn write_bundled(dir: &Path, disable: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, content) in BUNDLED {
        let path = dir.join(file);
        if disable.iter().any(|name| *name == addon_name(file)) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "removed a disabled bundled manifest")
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
            continue;
        }
        // Unchanged files are left alone so their mtime stays (nothing to re-check).
        if std::fs::read(&path).is_ok_and(|current| current == *content) {
            continue;
        }
        let temporary = dir.join(format!(".{file}.tmp"));
        std::fs::write(&temporary, content)?;
        std::fs::rename(&temporary, &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_manifests_are_written_and_disabled_ones_removed() {
        let dir = std::env::temp_dir().join(format!("capstan-bundled-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("mine.yaml"), "user: file\n").expect("user file");
        write_bundled(&dir, &[]).expect("write bundled");
        let names = bundled_names();
        assert!(names.contains(&"capstan-system".to_string()));
        assert!(names.contains(&"priority-classes".to_string()));
        assert!(dir.join("priority-classes.yaml").exists());
        write_bundled(&dir, &["priority-classes".to_string()]).expect("write bundled");
        assert!(!dir.join("priority-classes.yaml").exists());
        assert!(dir.join("rbac.yaml").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("mine.yaml")).expect("user file kept"),
            "user: file\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_bundled_manifest_parses() {
        for (file, content) in BUNDLED {
            let objects = super::super::manifest::objects(file, content).expect("bundled parses");
            assert!(!objects.is_empty(), "{file} has objects");
        }
    }
}
