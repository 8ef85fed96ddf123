//! Replacing the configuration file atomically: the new text goes to a temporary file in the same
//! directory (with the old file's permissions, and owner where the process may set it), which is
//! fsynced, renamed over the file, and the directory fsynced. A reader sees the old file or the
//! new one, never a mix, and after a crash the file is one or the other. A failure at any step
//! leaves the old file as it was (the temporary file is removed).

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `text`. The error says which step failed and why (e.g. no space left).
pub fn replace_file(path: &Path, text: &str) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{} names no file", path.display()))?;
    let failed = |what: &str, e: std::io::Error| format!("{what} in {}: {e}", dir.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| failed("cannot create a temporary file", e))?;
    if let Ok(old) = std::fs::metadata(path) {
        // The file may hold the API token: the new one is no more readable than the old.
        tmp.as_file()
            .set_permissions(old.permissions())
            .map_err(|e| failed("cannot set the temporary file's permissions", e))?;
        use std::os::unix::fs::MetadataExt;
        if let Err(e) = std::os::unix::fs::fchown(tmp.as_file(), Some(old.uid()), Some(old.gid())) {
            tracing::debug!("the new configuration file keeps this process's owner: {e}");
        }
    }
    tmp.write_all(text.as_bytes())
        .map_err(|e| failed("cannot write the new configuration", e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| failed("cannot fsync the new configuration", e))?;
    tmp.persist(path).map_err(|e| {
        format!(
            "cannot rename the new configuration over {}: {}",
            path.display(),
            e.error
        )
    })?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| {
            failed(
                "the file was replaced, but the directory could not be fsynced",
                e,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_is_replaced_with_its_permissions_and_no_temporary_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oasis.toml");
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&path, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_failure_names_the_step_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/oasis.toml");
        let e = replace_file(&path, "x").unwrap_err();
        assert!(e.starts_with("cannot create a temporary file in "), "{e}");
        assert!(!path.exists());
    }
}
