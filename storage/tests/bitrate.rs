//! Proves where `bitrate_bps` comes from: an MP4 built in the test (ftyp + moov/mvhd + mdat, no
//! external tools) gets size * 8 / mvhd duration; HLS segments get size * 8 / their `#EXTINF`
//! duration whether they are stored before or after the playlist, the values survive a reopen,
//! a replaced playlist updates them, and an uploader's bitrate is never overwritten. At start-up,
//! EXTINF bitrates that no stored playlist backs any more (the playlist's row vanished, or a
//! replaced playlist no longer lists the segment) return to the default, checked in the SQLite
//! catalog on disk.

mod support;

use oasis_storage::{bitrate_bps, mp4_duration_ms, BitrateSource, UploadOptions};
use support::*;

fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(body);
    b
}

/// A minimal MP4: ftyp, moov with a version-0 mvhd of `duration` units at `timescale`, and an
/// mdat of `payload_bytes`.
fn tiny_mp4(timescale: u32, duration: u32, payload_bytes: usize) -> Vec<u8> {
    let mut ftyp = b"isom".to_vec();
    ftyp.extend_from_slice(&512u32.to_be_bytes());
    ftyp.extend_from_slice(b"isomiso2mp41");
    let mut mvhd = vec![0u8; 4]; // version 0, flags 0
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // creation time
    mvhd.extend_from_slice(&0u32.to_be_bytes()); // modification time
    mvhd.extend_from_slice(&timescale.to_be_bytes());
    mvhd.extend_from_slice(&duration.to_be_bytes());
    mvhd.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
    mvhd.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
    mvhd.extend_from_slice(&[0u8; 10]); // reserved
    for m in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        mvhd.extend_from_slice(&m.to_be_bytes()); // unity matrix
    }
    mvhd.extend_from_slice(&[0u8; 24]); // pre_defined
    mvhd.extend_from_slice(&2u32.to_be_bytes()); // next track id
    let mut file = mp4_box(b"ftyp", &ftyp);
    file.extend(mp4_box(b"moov", &mp4_box(b"mvhd", &mvhd)));
    file.extend(mp4_box(b"mdat", &vec![0xabu8; payload_bytes]));
    file
}

#[test]
fn mp4_bitrate_from_movie_header() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    // 4 seconds at timescale 90 000.
    let bytes = tiny_mp4(90_000, 360_000, 50_000);
    let meta = store
        .put("films/tiny.mp4", &bytes, UploadOptions::default())
        .unwrap();
    assert_eq!(mp4_duration_ms(&store.object_path(&meta)), Some(4_000));
    assert_eq!(meta.bitrate_source, BitrateSource::Mp4);
    assert_eq!(
        meta.bitrate_bps,
        bitrate_bps(bytes.len() as u64, 4_000).unwrap()
    );
    assert_eq!(meta.bitrate_bps, (bytes.len() as u64 * 8).div_ceil(4));
    assert_eq!(meta.content_type, "video/mp4");

    // The uploader's value wins.
    let given = store.put(
        "films/given.mp4",
        &bytes,
        UploadOptions {
            bitrate_bps: Some(77),
            ..Default::default()
        },
    );
    assert_eq!(given.unwrap().bitrate_bps, 77);
    // Not an MP4 at all, a zero duration, a zero timescale: the default.
    for (name, content) in [
        ("films/junk.mp4", b"definitely not an mp4 file".to_vec()),
        ("films/zero.mp4", tiny_mp4(1000, 0, 10)),
        ("films/zeroscale.mp4", tiny_mp4(0, 1000, 10)),
        (
            "films/truncated.mp4",
            tiny_mp4(1000, 1000, 100)[..60].to_vec(),
        ),
    ] {
        let meta = store.put(name, &content, UploadOptions::default()).unwrap();
        assert_eq!(
            (meta.bitrate_bps, meta.bitrate_source),
            (1_234_567, BitrateSource::Default),
            "{name}"
        );
    }
}

#[test]
fn hls_segments_get_extinf_bitrates_before_and_after_their_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let seg1 = vec![1u8; 400_000];
    let seg3 = vec![3u8; 100_000];
    store
        .put("show/seg1.ts", &seg1, UploadOptions::default())
        .unwrap();
    store
        .put(
            "show/seg3.ts",
            &seg3,
            UploadOptions {
                bitrate_bps: Some(999),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        store.lookup("show/seg1.ts").unwrap().bitrate_source,
        BitrateSource::Default
    );

    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.000,\nseg1.ts\n#EXTINF:2.5,\nseg2.ts\n\
                    #EXTINF:4,\nseg3.ts\n#EXTINF:4,\n../other/seg9.ts\n#EXT-X-ENDLIST\n";
    store
        .put(
            "show/index.m3u8",
            playlist.as_bytes(),
            UploadOptions::default(),
        )
        .unwrap();

    // Stored before the playlist: updated.
    let m1 = store.lookup("show/seg1.ts").unwrap();
    assert_eq!(
        (m1.bitrate_bps, m1.bitrate_source),
        (800_000, BitrateSource::HlsExtinf)
    );
    // The uploader's value stays.
    assert_eq!(store.lookup("show/seg3.ts").unwrap().bitrate_bps, 999);
    // Stored after the playlist: gets it at ingest, also through a relative `..` reference.
    let m2 = store
        .put(
            "show/seg2.ts",
            &vec![2u8; 250_000],
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (m2.bitrate_bps, m2.bitrate_source),
        (800_000, BitrateSource::HlsExtinf)
    );
    let m9 = store
        .put(
            "other/seg9.ts",
            &vec![9u8; 50_000],
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (m9.bitrate_bps, m9.bitrate_source),
        (100_000, BitrateSource::HlsExtinf)
    );
    // The playlist itself has no media bitrate.
    let playlist = store.lookup("show/index.m3u8").unwrap();
    assert_eq!(
        (playlist.bitrate_bps, playlist.bitrate_source),
        (0, BitrateSource::Playlist)
    );

    // Persisted, and still known to segments stored after a reopen.
    drop(store);
    let (store, report) = open(dir.path());
    assert_eq!(report.bitrates_fixed, 0, "{report:?}");
    assert_eq!(store.lookup("show/seg1.ts").unwrap().bitrate_bps, 800_000);
    store.delete("show/seg2.ts").unwrap();
    let m2 = store
        .put(
            "show/seg2.ts",
            &vec![2u8; 500_000],
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(m2.bitrate_bps, 1_600_000);

    // A replaced playlist with new durations updates derived bitrates.
    store
        .put(
            "show/index.m3u8",
            b"#EXTM3U\n#EXTINF:8,\nseg1.ts\n",
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(store.lookup("show/seg1.ts").unwrap().bitrate_bps, 400_000);
    // Segments the new playlist no longer names keep what they had, and new uploads of them
    // fall back to the default.
    let m2 = store
        .put("show/seg2.ts", &[2u8; 10], UploadOptions::default())
        .unwrap();
    assert_eq!(m2.bitrate_source, BitrateSource::Default);
}

#[test]
fn deleting_a_playlist_returns_its_segments_to_the_default_bitrate() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let default_bps = config(dir.path()).default_bitrate_bps;
    store
        .put(
            "show/seg0.ts",
            &vec![1u8; 100_000],
            UploadOptions::default(),
        )
        .unwrap();
    store
        .put(
            "show/index.m3u8",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg0.ts\n#EXT-X-ENDLIST\n",
            UploadOptions::default(),
        )
        .unwrap();
    let seg = store.lookup("show/seg0.ts").unwrap();
    assert_eq!(seg.bitrate_source, BitrateSource::HlsExtinf);
    assert_eq!(seg.bitrate_bps, 200_000, "100,000 bytes over 4 s");
    store.delete("show/index.m3u8").unwrap();
    let seg = store.lookup("show/seg0.ts").unwrap();
    assert_eq!(
        (seg.bitrate_source, seg.bitrate_bps),
        (BitrateSource::Default, default_bps)
    );
    // The catalog agrees after a restart.
    drop(store);
    let (store, _) = open(dir.path());
    let seg = store.lookup("show/seg0.ts").unwrap();
    assert_eq!(
        (seg.bitrate_source, seg.bitrate_bps),
        (BitrateSource::Default, default_bps)
    );
}

/// `(bitrate_bps, bitrate_source)` of `name` as the SQLite catalog on disk holds it.
fn catalog_bitrate(dir: &std::path::Path, name: &str) -> (u64, String) {
    let db = rusqlite::Connection::open(dir.join("catalog.sqlite")).unwrap();
    db.query_row(
        "SELECT bitrate_bps, bitrate_source FROM objects WHERE name = ?1",
        [name],
        |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn start_up_resets_extinf_bitrates_no_playlist_backs() {
    let dir = tempfile::tempdir().unwrap();
    let default_bps = config(dir.path()).default_bitrate_bps;
    let (store, _) = open(dir.path());
    for (name, fill) in [
        ("a/s0.ts", 0u8),
        ("a/s1.ts", 1),
        ("b/s0.ts", 2),
        ("c/s0.ts", 3),
    ] {
        store
            .put(name, &vec![fill; 100_000], UploadOptions::default())
            .unwrap();
    }
    let list = |segs: &[&str]| {
        let mut p = String::from("#EXTM3U\n");
        for s in segs {
            p.push_str(&format!("#EXTINF:4.0,\n{s}\n"));
        }
        p.into_bytes()
    };
    for (playlist, segs) in [
        ("a/index.m3u8", &["s0.ts", "s1.ts"][..]),
        ("b/index.m3u8", &["s0.ts"][..]),
        ("c/index.m3u8", &["s0.ts"][..]),
    ] {
        store
            .put(playlist, &list(segs), UploadOptions::default())
            .unwrap();
    }
    for seg in ["a/s0.ts", "a/s1.ts", "b/s0.ts", "c/s0.ts"] {
        assert_eq!(
            catalog_bitrate(dir.path(), seg),
            (200_000, "hls_extinf".to_string()),
            "{seg}: 100,000 bytes over 4 s"
        );
    }
    // a/index.m3u8 is replaced by one that no longer lists s1.ts: s1.ts keeps its stale value
    // while running.
    store
        .put("a/index.m3u8", &list(&["s0.ts"]), UploadOptions::default())
        .unwrap();
    assert_eq!(
        store.lookup("a/s1.ts").unwrap().bitrate_source,
        BitrateSource::HlsExtinf
    );
    drop(store);
    // b/index.m3u8's row disappears as if a crash came between a delete's commit and the reset of
    // its segments (the file is then an orphan that recovery removes).
    rusqlite::Connection::open(dir.path().join("catalog.sqlite"))
        .unwrap()
        .execute("DELETE FROM objects WHERE name = 'b/index.m3u8'", [])
        .unwrap();

    let (store, report) = open(dir.path());
    assert_eq!(report.orphan_files_removed, 1, "{report:?}");
    assert_eq!(report.bitrates_reset, 2, "{report:?}");
    assert_eq!(report.bitrates_reset_names, ["a/s1.ts", "b/s0.ts"]);
    for seg in ["a/s1.ts", "b/s0.ts"] {
        let meta = store.lookup(seg).unwrap();
        assert_eq!(
            (meta.bitrate_bps, meta.bitrate_source),
            (default_bps, BitrateSource::Default),
            "{seg}"
        );
        assert_eq!(
            catalog_bitrate(dir.path(), seg),
            (default_bps, "default".to_string()),
            "{seg} in the catalog"
        );
    }
    for seg in ["a/s0.ts", "c/s0.ts"] {
        assert_eq!(
            catalog_bitrate(dir.path(), seg),
            (200_000, "hls_extinf".to_string()),
            "{seg} is still listed and keeps its value"
        );
    }
    // Nothing left to reset at the next start.
    drop(store);
    let (_store, report) = open(dir.path());
    assert_eq!(
        (report.bitrates_reset, report.bitrates_fixed),
        (0, 0),
        "{report:?}"
    );
}
