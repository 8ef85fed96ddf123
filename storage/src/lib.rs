//! Oasis storage: the Media Object Manager and the Database Manager (catalog).
//!
//! From the Oasis design: the Media Object Manager stores and retrieves media objects and reports
//! what is available; it keeps track of every object (bandwidth requirement, size, availability)
//! through the Database Manager, whose standard interface lets another database be plugged in.
//! Here:
//!
//! - [`Store`] (module `store`): one data directory; content in flat files named by version id,
//!   an in-memory index for lookups, crash recovery at [`Store::open`];
//! - [`Upload`] (module `upload`): atomic, reserved, streaming ingest;
//! - [`Catalog`] / [`SqliteCatalog`] (module `catalog`): the Database Manager, which also keeps
//!   the User Manager's accounts ([`UserRecord`]) and the audit trail ([`AuditRecord`]);
//! - [`AuditLog`] (module `audit`): the audit trail's writer thread behind a bounded queue;
//! - [`validate_name`], [`content_type_for`], bitrate derivation (MP4 `mvhd`, HLS `#EXTINF`);
//! - [`import_dir`]: bulk import for the `oasis import` command.
//!
//! The API is synchronous and `Send + Sync`; the engine chooses which thread calls what. The hot
//! path ([`Store::lookup`], [`Store::open_file`]) never touches SQLite and, on a cache hit, never
//! makes a system call.
//!
//! **Invariants:** an object name never becomes a file path; every byte written is reserved with
//! the Resource Manager first; storage never reads the clock (the configured clock is called);
//! after a crash at any point, [`Store::open`] shows either the old or the new version of each
//! object, never a partial one. The on-disk format is in `FORMAT.md`.

#![forbid(unsafe_code)]

mod audit;
mod backup;
mod bitrate;
mod catalog;
mod content_type;
mod error;
mod fd_cache;
mod files;
mod fsck;
mod ids;
mod import;
mod inner;
mod layout;
mod name;
pub mod record;
mod scrub;
mod store;
mod upload;

pub use audit::{AuditConfig, AuditLog, AuditPause};
pub use backup::{backup, BackupReport};
pub use bitrate::{
    bitrate_bps, mp4_duration_ms, parse_playlist, BitrateSource, PlaylistEntry, DURATION_MS_MAX,
    PLAYLIST_BYTES_MAX, PLAYLIST_SEGMENTS_MAX,
};
/// Sample records for tests of catalog backends (hidden; tests only).
#[doc(hidden)]
pub use catalog::fixtures as catalog_fixtures;
pub use catalog::{
    node_id_problem, redact_url, url_problem, AccountsKept, AuditQuery, AuditRecord, BitrateUpdate,
    Catalog, CatalogError, CatalogLocation, Holder, NodeLoad, NodeRecord, ObjectMeta, PgCatalog,
    PoolCatalog, ReplicaRecord, SqliteCatalog, UserRecord, AUDIT_QUERY_LIMIT_MAX,
    AUDIT_TEXT_BYTES_MAX, NODE_ID_BYTES_MAX, PG_SCHEMA_VERSION, POOL_NODES_MAX, SCHEMA_VERSION,
};
pub use content_type::{content_type_for, FALLBACK_CONTENT_TYPE};
pub use error::StoreError;
pub use fd_cache::ShrinkCounts;
pub use fsck::{fsck, rebuild_catalog, FsckReport, RebuildReport, LOST_FOUND_DIR};
pub use import::{import_dir, ImportReport};
pub use inner::{system_clock_unix_ms, CommitterHold, FaultPoint, StoreConfig};
pub use layout::{CATALOG_FILE, LOCK_FILE, OBJECTS_DIR, TMP_DIR};
pub use name::{validate_name, NameError, NAME_BYTES_MAX, SEGMENT_BYTES_MAX};
pub use scrub::{ScrubConfig, ScrubStats, Scrubber};
pub use store::{RecoveryReport, Store, REPORT_NAMES_MAX};
pub use upload::{Piece, Upload, UploadOptions, UploadTicket};
