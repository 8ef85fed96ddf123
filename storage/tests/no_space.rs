//! Proves that running out of disk is a clean, typed error that damages nothing:
//! - a real ENOSPC: the data directory sits on a 2 MiB tmpfs (needs root to mount; the test says
//!   "skipped" otherwise) and an upload larger than the file system fails with `NoSpace`, leaves
//!   no temp file, keeps the earlier objects intact, and a small upload afterwards still works;
//! - a refused reservation: a Resource Manager whose disk_space_bytes limit is smaller than the
//!   upload gives a `Reserve` error naming disk_space_bytes before a single byte is written.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use oasis_storage::{Store, StoreError, UploadOptions};
use support::*;

/// Unmounts on drop, so a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Option<Mount> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mount(dir.to_path_buf())),
        Ok(o) => {
            cannot_run(&format!(
                "needs root to mount tmpfs ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
            None
        }
        Err(e) => {
            cannot_run(&format!("needs root to mount tmpfs ({e})"));
            None
        }
    }
}

#[test]
fn enospc_is_clean_and_the_store_keeps_working() {
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_mount) = mount_tmpfs(&mnt, "2m") else {
        return;
    };
    let data = mnt.join("data");
    {
        let (store, _) = open(&data);
        let keep = store
            .put("keep.ts", &[42u8; 100_000], UploadOptions::default())
            .unwrap();

        // Unknown length, streamed in chunks, bigger than the whole file system.
        let mut up = store
            .create_upload("huge.ts", UploadOptions::default())
            .unwrap();
        let chunk = vec![9u8; 64 << 10];
        let mut err = None;
        for _ in 0..64 {
            if let Err(e) = up.write_all(&chunk) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("a 4 MiB upload must not fit a 2 MiB tmpfs");
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("no space left") && msg.contains("free space"),
            "{msg}"
        );
        drop(up);
        assert!(
            dir_entries(&data.join("tmp")).is_empty(),
            "temp file removed"
        );
        assert!(store.lookup("huge.ts").is_none());

        // What was there is intact and readable.
        assert_eq!(store.lookup("keep.ts").unwrap(), keep);
        store.verify(&keep).unwrap();
        assert_eq!(read_all(&store, &keep), vec![42u8; 100_000]);

        // The store still works.
        let small = store
            .put("small.ts", b"still works", UploadOptions::default())
            .unwrap();
        assert_eq!(read_all(&store, &small), b"still works");
        // A known length that cannot fit fails cleanly too.
        let too_big = store.put(
            "known.ts",
            &vec![1u8; 3 << 20],
            UploadOptions {
                expected_len: Some(3 << 20),
                ..Default::default()
            },
        );
        assert!(
            matches!(too_big, Err(StoreError::NoSpace { .. })),
            "{too_big:?}"
        );
        assert!(dir_entries(&data.join("tmp")).is_empty());
    }
    // And it all survives a reopen with nothing to repair.
    let (store, report) = open(&data);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(
        store
            .list()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["keep.ts", "small.ts"]
    );
}

#[test]
fn refused_disk_reservation_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path()), rm_with(10_000, 16)).unwrap();
    store
        .put("fits.bin", &[1u8; 6_000], UploadOptions::default())
        .unwrap();

    // Known length over what is left: refused at create_upload.
    let err = store
        .create_upload(
            "big.bin",
            UploadOptions {
                expected_len: Some(5_000),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Reserve(_)), "{err:?}");
    assert!(err.to_string().contains("disk_space_bytes"), "{err}");
    assert!(
        dir_entries(&dir.path().join("tmp")).is_empty(),
        "no temp file created"
    );

    // Unknown length: refused at the write that would pass the limit, before writing it.
    let mut up = store
        .create_upload("big.bin", UploadOptions::default())
        .unwrap();
    up.write_all(&[2u8; 3_000]).unwrap();
    let err = up.write_all(&[2u8; 3_000]).unwrap_err();
    assert!(matches!(err, StoreError::Reserve(_)), "{err:?}");
    assert!(err.to_string().contains("disk_space_bytes"), "{err}");
    let tmp_files = dir_entries(&dir.path().join("tmp"));
    assert_eq!(tmp_files.len(), 1);
    let tmp_len = std::fs::metadata(dir.path().join("tmp").join(&tmp_files[0]))
        .unwrap()
        .len();
    // The accepted 3,000 bytes may still be staged in memory (uploads write 256 KiB at a time);
    // nothing of the refused chunk reached the file either way.
    assert!(
        tmp_len <= 3_000,
        "the refused chunk was not written ({tmp_len} bytes)"
    );
    drop(up);
    assert!(dir_entries(&dir.path().join("tmp")).is_empty());
    assert_eq!(store.list().len(), 1);
}
