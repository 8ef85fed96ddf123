//! The library's offline commands: `import`, `fsck`, `scrub` and `backup`.
//!
//! `import`, `fsck` and `scrub` take the data directory's lock, so they run only while no server
//! uses it; `backup` reads a data directory whether or not its server runs. The work itself is in
//! `oasis-storage`; this module parses, prints and sets the exit status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};
use oasis_engine::ResourceManager;
use oasis_storage::Store;

use crate::config::Config;

/// The store of `data_dir` (or the configuration's), opened as `oasis serve` would.
pub fn open_store(
    data_dir: Option<PathBuf>,
    config: Option<&PathBuf>,
) -> Result<(Arc<Store>, PathBuf)> {
    let mut cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    let resolved = cfg.resolve(&oasis_engine::layout::available_cores())?;
    let rm = ResourceManager::new(&resolved.limits);
    let (store, recovery) = Store::open(resolved.store, rm)?;
    if !recovery.is_clean() {
        eprintln!("recovery: {recovery:?}");
    }
    Ok((store, cfg.server.data_dir))
}

pub fn import(
    dir: &Path,
    data_dir: Option<PathBuf>,
    prefix: Option<&str>,
    config: Option<&PathBuf>,
) -> Result<()> {
    let (store, data_dir) = open_store(data_dir, config)?;
    let report = oasis_storage::import_dir(&store, dir, prefix)?;
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    println!(
        "imported {} objects ({} bytes) into {}",
        report.imported.len(),
        report.imported_bytes,
        data_dir.display()
    );
    Ok(())
}

fn print_all<T: std::fmt::Display>(what: &str, items: &[T]) {
    for item in items {
        println!("{what}: {item}");
    }
}

pub fn fsck(data_dir: &Path, rebuild: bool, checksums: bool) -> Result<()> {
    if rebuild {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let r = oasis_storage::rebuild_catalog(data_dir, now)?;
        for p in &r.kept_aside {
            println!("kept aside: {}", p.display());
        }
        print_all("superseded (moved to lost+found)", &r.superseded);
        print_all("unplaced (moved to lost+found)", &r.unplaced);
        println!(
            "accounts kept: {} users, {} audit records",
            r.accounts.users, r.accounts.audit_records
        );
        for lost in &r.accounts.lost {
            println!(
                "not kept: {lost}; add the users again with `oasis user add NAME --role ROLE --data-dir {}`",
                data_dir.display()
            );
        }
        println!(
            "rebuilt the catalog of {} from the objects' own records: {} objects; start the server \
             as before (playlist-derived bitrates are learnt again at start-up)",
            data_dir.display(),
            r.restored
        );
        return Ok(());
    }
    let r = oasis_storage::fsck(data_dir, checksums)?;
    if let Some(why) = &r.catalog {
        bail!(
            "the catalog cannot be read ({why}); rebuild it from the objects' own records with \
             `oasis fsck --data-dir {} --rebuild-catalog`",
            data_dir.display()
        );
    }
    if r.foreign > 0 {
        bail!(
            "the catalog is older than {} of the object files (it was deleted, replaced or restored \
             from an older copy); rebuild it from the objects' own records with \
             `oasis fsck --data-dir {} --rebuild-catalog`",
            r.foreign,
            data_dir.display()
        );
    }
    print_all("missing file", &r.missing);
    let orphans: Vec<String> = r.orphans.iter().map(|p| p.display().to_string()).collect();
    print_all("orphan file (no catalog row)", &orphans);
    print_all("length mismatch", &r.length_mismatches);
    print_all("checksum mismatch", &r.checksum_mismatches);
    print_all("record", &r.records);
    let unknown: Vec<String> = r.unknown.iter().map(|p| p.display().to_string()).collect();
    print_all("unknown entry in objects/", &unknown);
    let problems = r.missing.len()
        + r.orphans.len()
        + r.length_mismatches.len()
        + r.checksum_mismatches.len()
        + r.records.len()
        + r.unknown.len();
    let read = if checksums {
        format!(", {} bytes read for checksums", r.bytes_checked)
    } else {
        String::new()
    };
    if problems == 0 {
        println!(
            "{}: clean ({} objects{read})",
            data_dir.display(),
            r.objects
        );
        return Ok(());
    }
    bail!(
        "{}: {problems} problem{} in {} objects{read}; a start of the server drops rows whose file \
         is missing or the wrong size and removes orphan files; a checksum mismatch means the \
         object's bytes changed on disk: upload it again",
        data_dir.display(),
        if problems == 1 { "" } else { "s" },
        r.objects
    )
}

pub fn scrub(data_dir: Option<PathBuf>, config: Option<&PathBuf>) -> Result<()> {
    let (store, data_dir) = open_store(data_dir, config)?;
    let (mut objects, mut bytes, mut corrupt) = (0u64, 0u64, Vec::new());
    for meta in store.list() {
        objects += 1;
        match store.verify_paced(&meta, |n| bytes += n) {
            Ok(()) => {}
            Err(e @ oasis_storage::StoreError::Corrupted { .. }) => {
                println!("corrupt: {}: {e}", meta.name);
                corrupt.push(meta.name.clone());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if corrupt.is_empty() {
        println!(
            "{}: {objects} objects, {bytes} bytes, every checksum matches",
            data_dir.display()
        );
        return Ok(());
    }
    bail!(
        "{}: {} of {objects} objects failed their checksum; upload them again (or restore them from a backup)",
        data_dir.display(),
        corrupt.len()
    )
}

pub fn backup(data_dir: &Path, dest: &Path) -> Result<()> {
    let r = oasis_storage::backup(data_dir, dest)?;
    println!(
        "backed up {} objects of {} into {}: {} linked, {} copied ({} bytes), {} already there, \
         {} left out (deleted during the backup), {} removed (no longer in the library)",
        r.objects,
        data_dir.display(),
        dest.display(),
        r.linked,
        r.copied,
        r.copied_bytes,
        r.reused,
        r.vanished,
        r.removed
    );
    println!(
        "restore: stop the server and start it with --data-dir {}",
        dest.display()
    );
    Ok(())
}
