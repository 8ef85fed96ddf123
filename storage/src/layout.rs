//! Where things are in a data directory: its fixed names and the path of a version's file.
//!
//! Pure: no I/O, no other module of the crate. A name never becomes a path here (or anywhere):
//! content files are named by version id.

use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";
/// Name of the catalog file inside the data directory.
pub const CATALOG_FILE: &str = "catalog.sqlite";
/// Directory of committed content files.
pub const OBJECTS_DIR: &str = "objects";
/// Directory of uploads in progress.
pub const TMP_DIR: &str = "tmp";
/// Suffix of upload temp files.
pub(crate) const TMP_SUFFIX: &str = ".part";

/// The content path of version `id` under `objects_dir`: `<2 hex of the low byte>/<16 hex>`.
pub(crate) fn object_path_in(objects_dir: &Path, id: u64) -> PathBuf {
    objects_dir
        .join(format!("{:02x}", id & 0xff))
        .join(format!("{id:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_fan_out_by_low_byte() {
        let p = object_path_in(Path::new("/d/objects"), 0x1234);
        assert_eq!(p, Path::new("/d/objects/34/0000000000001234"));
    }
}
