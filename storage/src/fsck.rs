//! `oasis fsck`: check a data directory's catalog against its files, and rebuild a lost or
//! damaged catalog from the files' own records.
//!
//! Both run offline (they take the data directory's lock, so never beside a server) and never
//! delete: a check only reports; a rebuild keeps the old catalog aside and moves files it cannot
//! place into `lost+found/`. Files carry no users and no audit trail: a rebuild copies those from
//! the old catalog when it can still read them, and says so when it cannot. Start-up recovery,
//! not this module, repairs a healthy catalog after a crash.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::catalog::{AccountsKept, Catalog, ObjectMeta, SqliteCatalog};
use crate::error::StoreError;
use crate::files::{crc32c_of, scan_objects, sync_dir, take_lock};
use crate::layout::{CATALOG_FILE, OBJECTS_DIR};
use crate::record::{self, RecordError};

/// Where a rebuild puts files it cannot give a name (no record, or an older version).
pub const LOST_FOUND_DIR: &str = "lost+found";

/// What `fsck` found; every list names the object and what is wrong.
#[derive(Debug, Default)]
pub struct FsckReport {
    /// Catalog rows checked.
    pub objects: u64,
    /// Content bytes read for checksums.
    pub bytes_checked: u64,
    /// The catalog could not be read at all (missing or damaged); nothing else was compared.
    pub catalog: Option<String>,
    /// Rows whose file is missing.
    pub missing: Vec<String>,
    /// Files no row names.
    pub orphans: Vec<PathBuf>,
    /// How many of the orphans carry an id this catalog never handed out: the catalog is older
    /// than the files (deleted, replaced or restored), and a rebuild is the repair.
    pub foreign: u64,
    /// Rows whose file has another length.
    pub length_mismatches: Vec<String>,
    /// Rows whose file has another CRC-32C.
    pub checksum_mismatches: Vec<String>,
    /// Files whose own record is missing or disagrees with their row.
    pub records: Vec<String>,
    /// Entries under `objects/` that are not content files.
    pub unknown: Vec<PathBuf>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.catalog.is_none()
            && self.missing.is_empty()
            && self.orphans.is_empty()
            && self.length_mismatches.is_empty()
            && self.checksum_mismatches.is_empty()
            && self.records.is_empty()
            && self.unknown.is_empty()
    }
}

/// Checks the catalog of `data_dir` against its files; with `checksums`, reads every file.
pub fn fsck(data_dir: &Path, checksums: bool) -> Result<FsckReport, StoreError> {
    let _lock = take_lock(data_dir)?;
    let mut report = FsckReport::default();
    let catalog_path = data_dir.join(CATALOG_FILE);
    let files = scan_objects(&data_dir.join(OBJECTS_DIR))?;
    report.unknown = files.unknown;
    let rows = if catalog_path.exists() {
        SqliteCatalog::open(&catalog_path).and_then(|mut c| c.load_all())
    } else {
        report.catalog = Some(format!("{} is missing", catalog_path.display()));
        return Ok(report);
    };
    let (rows, next_id) = match rows.and_then(|rows| {
        let next = SqliteCatalog::open(&catalog_path)?.peek_next_id()?;
        Ok((rows, next))
    }) {
        Ok(found) => found,
        Err(e) => {
            report.catalog = Some(e.to_string());
            return Ok(report);
        }
    };
    report.foreign = on_disk_ids_from(&files.by_id, next_id);
    let mut on_disk = files.by_id;
    for row in rows {
        report.objects += 1;
        let label = format!("{} (id {})", row.name, row.id);
        let Some((path, len)) = on_disk.remove(&row.id) else {
            report.missing.push(label);
            continue;
        };
        if len != row.size_bytes {
            report.length_mismatches.push(format!(
                "{label}: file is {len} bytes, catalog says {}",
                row.size_bytes
            ));
            continue;
        }
        match record::read(&path) {
            Ok(Ok(rec)) if agrees(&rec, &row) => {}
            Ok(Ok(rec)) => report.records.push(format!(
                "{label}: the file's record says {} (id {}, {} bytes, crc32c {:08x})",
                rec.name, rec.id, rec.size_bytes, rec.crc32c
            )),
            Ok(Err(e)) => report.records.push(format!("{label}: {e}")),
            Err(e) => report
                .records
                .push(format!("{label}: record unreadable: {e}")),
        }
        if checksums {
            let (len, crc) = crc32c_of(&path, |n| report.bytes_checked += n)?;
            if len != row.size_bytes || crc != row.crc32c {
                report.checksum_mismatches.push(format!(
                    "{label}: crc32c {crc:08x}, catalog says {:08x}",
                    row.crc32c
                ));
            }
        }
    }
    let mut orphans: Vec<PathBuf> = on_disk.into_values().map(|(p, _)| p).collect();
    orphans.sort();
    report.orphans = orphans;
    Ok(report)
}

fn on_disk_ids_from(files: &HashMap<u64, (PathBuf, u64)>, next_id: u64) -> u64 {
    files.keys().filter(|id| **id >= next_id).count() as u64
}

/// Whether a file's record describes its catalog row (the fields a record keeps for good; a
/// bitrate learnt from a playlist is derived and may differ).
fn agrees(rec: &ObjectMeta, row: &ObjectMeta) -> bool {
    rec.id == row.id
        && rec.name == row.name
        && rec.size_bytes == row.size_bytes
        && rec.crc32c == row.crc32c
        && rec.content_type == row.content_type
}

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Objects in the new catalog.
    pub restored: u64,
    /// Older versions of a name, moved to `lost+found/` (name, id).
    pub superseded: Vec<String>,
    /// Files without a usable record, moved to `lost+found/`, with why.
    pub unplaced: Vec<String>,
    /// Where the old catalog's files went.
    pub kept_aside: Vec<PathBuf>,
    /// The user accounts and audit records carried over from the old catalog, and what could not
    /// be (users named there must be added again).
    pub accounts: AccountsKept,
}

/// Writes a new catalog for `data_dir` from the files' own records, keeping the old catalog
/// files aside with the suffix `.damaged-<now_unix_secs>`. Of several versions of one name, the
/// newest (by commit time, then id) is kept; the others, and files without a usable record,
/// move to `lost+found/`. Bitrates learnt from playlists are derived again at the next start.
/// User accounts and the audit trail exist only in the catalog: they are copied from the old
/// catalog when it can be read ([`RebuildReport::accounts`]), and lost otherwise.
pub fn rebuild_catalog(data_dir: &Path, now_unix_secs: u64) -> Result<RebuildReport, StoreError> {
    let _lock = take_lock(data_dir)?;
    let mut report = RebuildReport::default();
    let objects_dir = data_dir.join(OBJECTS_DIR);
    let files = scan_objects(&objects_dir)?;
    let lost = data_dir.join(LOST_FOUND_DIR);

    // The newest version of every name, from the files' records.
    let mut newest: HashMap<String, ObjectMeta> = HashMap::new();
    let mut displaced: Vec<(PathBuf, String)> = Vec::new();
    let mut ids: Vec<u64> = files.by_id.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let (path, len) = &files.by_id[&id];
        let rec = match record::read(path) {
            Ok(Ok(rec)) if rec.id == id && rec.size_bytes == *len => rec,
            Ok(Ok(rec)) => {
                let why = format!(
                    "its record names id {} with {} bytes",
                    rec.id, rec.size_bytes
                );
                displaced.push((path.clone(), why));
                continue;
            }
            Ok(Err(e @ (RecordError::Missing | RecordError::Malformed(_)))) => {
                displaced.push((path.clone(), e.to_string()));
                continue;
            }
            Err(e) => return Err(StoreError::io("reading the object record of", path, e)),
        };
        let key = |m: &ObjectMeta| (m.created_unix_ms, m.id);
        match newest.get(&rec.name) {
            Some(kept) if key(kept) > key(&rec) => {
                report
                    .superseded
                    .push(format!("{} (id {})", rec.name, rec.id));
                displaced.push((path.clone(), "an older version".into()));
            }
            _ => {
                if let Some(old) = newest.insert(rec.name.clone(), rec) {
                    report
                        .superseded
                        .push(format!("{} (id {})", old.name, old.id));
                    let old_path = files.by_id[&old.id].0.clone();
                    displaced.push((old_path, "an older version".into()));
                }
            }
        }
    }

    // The old catalog aside (never deleted), then a new one. The `-wal` keeps its place beside
    // the main file's new name, so the old catalog can still be read whole.
    let old_catalog = data_dir.join(format!("{CATALOG_FILE}.damaged-{now_unix_secs}"));
    let had_catalog = data_dir.join(CATALOG_FILE).exists();
    for suffix in ["", "-wal", "-shm"] {
        let from = data_dir.join(format!("{CATALOG_FILE}{suffix}"));
        if from.exists() {
            let to = data_dir.join(format!("{CATALOG_FILE}.damaged-{now_unix_secs}{suffix}"));
            fs::rename(&from, &to).map_err(|e| StoreError::io("keeping aside", &from, e))?;
            report.kept_aside.push(to);
        }
    }
    let mut catalog = SqliteCatalog::open(&data_dir.join(CATALOG_FILE))?;
    let mut rows: Vec<ObjectMeta> = newest.into_values().collect();
    rows.sort_unstable_by_key(|m| m.id);
    catalog.insert_all(&rows)?;
    let next = files.by_id.keys().max().map_or(1, |max| max + 1);
    catalog.advance_ids_to(next)?;
    report.restored = rows.len() as u64;
    report.accounts = if had_catalog {
        catalog.keep_accounts_from(&old_catalog)
    } else {
        AccountsKept {
            lost: vec!["the user accounts and the audit trail (there was no old catalog)".into()],
            ..AccountsKept::default()
        }
    };
    if !report.accounts.lost.is_empty() {
        tracing::warn!(
            target: "oasis::storage",
            lost = ?report.accounts.lost,
            "the rebuilt catalog lacks what the objects' records cannot give: if users were \
             defined, add every account again through the User Manager"
        );
    }

    // Files the catalog cannot name go to lost+found (recovery would remove them as orphans).
    if !displaced.is_empty() {
        fs::create_dir_all(&lost).map_err(|e| StoreError::io("creating", &lost, e))?;
        for (path, why) in displaced {
            let to = lost.join(path.file_name().expect("object files have a name"));
            fs::rename(&path, &to).map_err(|e| StoreError::io("moving to lost+found", &path, e))?;
            if why != "an older version" {
                report.unplaced.push(format!("{}: {why}", to.display()));
            }
        }
        sync_dir(&lost)?;
        for fan in 0..=0xffu64 {
            sync_dir(&objects_dir.join(format!("{fan:02x}")))?;
        }
    }
    sync_dir(data_dir)?;
    Ok(report)
}
