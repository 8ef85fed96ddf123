//! The store on real files: appends made durable and found again after a reopen, torn and corrupt
//! tails cut at start-up (what was cut reported), segments started on a jump, group commits by
//! size, read plans that rebuild the bytes, and the directory lock.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::proto::{Decoder, Message};

fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.commit.interval = Duration::from_millis(1);
    c
}

/// Queues an append that waits for durability; the receiver gets its outcome.
fn append(
    store: &Store,
    stream: &Arc<Stream>,
    offset: u64,
    bytes: &[u8],
) -> Receiver<AppendResult> {
    append_as(store, stream, offset, bytes, true, true)
}

/// Queues an append of `bytes` at `offset` (empty: a wait for what is written up to it), waiting
/// for durability or not, opening a connection or not.
fn append_as(
    store: &Store,
    stream: &Arc<Stream>,
    offset: u64,
    bytes: &[u8],
    durable: bool,
    opens: bool,
) -> Receiver<AppendResult> {
    let (tx, rx) = channel();
    store.append(Append {
        stream: Arc::clone(stream),
        offset,
        payloads: (!bytes.is_empty())
            .then(|| Payload::new(bytes.to_vec()))
            .into_iter()
            .collect(),
        durable,
        opens,
        done: Box::new(move |r| tx.send(r).unwrap()),
    });
    rx
}

fn append_now(store: &Store, stream: &Arc<Stream>, offset: u64, bytes: &[u8]) -> AppendResult {
    append(store, stream, offset, bytes)
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
}

fn pattern(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|i| (i * 7 % 251) as u8)
        .collect()
}

/// Every byte the stream holds, gaps as `(from, to)`.
fn read_all(stream: &Arc<Stream>, from: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
    let mut c = Cursor::new(Arc::clone(stream), from);
    let (mut bytes, mut gaps) = (Vec::new(), Vec::new());
    while let Some(step) = c.next_step().unwrap() {
        match step {
            Step::Gap { from, to } => gaps.push((from, to)),
            Step::Record(r) => bytes.extend(r.read().unwrap()),
        }
    }
    (bytes, gaps)
}

fn segments_of(dir: &Path, stream: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(STREAMS_DIR).join(stream))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn appends_are_durable_and_found_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!(rec.streams, 0);
    let s = store.stream("web-1/access").unwrap();
    assert_eq!(append_now(&store, &s, 0, &pattern(0, 1000)), Ok(1000));
    // Over a record's size: split into records, one append.
    let big = pattern(1000, RECORD_BYTES_MAX + 10);
    let end = 1000 + big.len() as u64;
    assert_eq!(append_now(&store, &s, 1000, &big), Ok(end));
    assert_eq!(s.durable_end(), end);
    drop(store); // closes, and lets go of the directory's lock

    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert_eq!((rec.streams, rec.segments, rec.bytes), (1, 1, end));
    assert!(rec.cuts.is_empty(), "{:?}", rec.cuts);
    let s = store.find("web-1/access").unwrap();
    assert_eq!(s.ranges(), vec![(0, end)]);
    let (bytes, gaps) = read_all(&s, 0);
    assert!(gaps.is_empty());
    assert_eq!(bytes, pattern(0, end as usize));
    // From inside a record.
    assert_eq!(read_all(&s, 1500).0, pattern(1500, (end - 1500) as usize));
    // The stream's directory: `/` written as `%`.
    assert_eq!(segments_of(dir.path(), "web-1%access").len(), 1);
}

#[test]
fn a_wrong_offset_is_refused_and_a_jump_starts_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let s = store.stream("a").unwrap();
    assert_eq!(append_now(&store, &s, 100, &pattern(100, 50)), Ok(150));
    assert_eq!(
        append_now(&store, &s, 120, &pattern(120, 5)),
        Err(AppendError::Unexpected {
            offset: 120,
            expect: 150
        })
    );
    assert_eq!(append_now(&store, &s, 150, &pattern(150, 50)), Ok(200));
    assert_eq!(append_now(&store, &s, 500, &pattern(500, 10)), Ok(510));
    assert_eq!(s.ranges(), vec![(100, 200), (500, 510)]);
    let (bytes, gaps) = read_all(&s, 0);
    assert_eq!(gaps, vec![(0, 100), (200, 500)]);
    let mut want = pattern(100, 100);
    want.extend(pattern(500, 10));
    assert_eq!(bytes, want);
    assert_eq!(segments_of(dir.path(), "a").len(), 2);
    drop(store); // closes, and lets go of the directory's lock
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.cuts.is_empty());
    assert_eq!(
        store.find("a").unwrap().ranges(),
        vec![(100, 200), (500, 510)]
    );
}

/// Writes three records of 100 bytes to stream "s" and closes; then hands the segment file
/// (open for writing) and its length to `damage`. Returns the path and that length.
fn three_records_then(dir: &Path, damage: impl FnOnce(&std::fs::File, u64)) -> (PathBuf, u64) {
    let (store, _) = Store::open(config(dir)).unwrap();
    let s = store.stream("s").unwrap();
    for i in 0..3u64 {
        assert_eq!(
            append_now(&store, &s, i * 100, &pattern(i * 100, 100)),
            Ok((i + 1) * 100)
        );
    }
    drop(store);
    let seg = segments_of(dir, "s").pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    damage(&f, len);
    (seg, len)
}

fn reopen_expecting_a_cut(dir: &Path, offset: u64, bytes: u64, why: &str) -> Arc<Store> {
    let (store, rec) = Store::open(config(dir)).unwrap();
    assert_eq!(rec.cuts.len(), 1, "{:?}", rec.cuts);
    let cut = &rec.cuts[0];
    assert_eq!(
        (cut.stream.as_str(), cut.offset, cut.bytes),
        ("s", offset, bytes)
    );
    assert!(cut.removed);
    assert!(cut.why.contains(why), "{}", cut.why);
    let s = store.find("s").unwrap();
    assert_eq!(s.durable_end(), offset);
    assert_eq!(read_all(&s, 0).0, pattern(0, offset as usize));
    store
}

#[test]
fn recovery_cuts_a_record_cut_short_and_appends_go_on_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, len) = three_records_then(dir.path(), |f, len| f.set_len(len - 30).unwrap());
    let store = reopen_expecting_a_cut(dir.path(), 200, 90, "cut short");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len - 120);
    let s = store.find("s").unwrap();
    assert_eq!(append_now(&store, &s, 200, &pattern(200, 100)), Ok(300));
    drop(store); // closes, and lets go of the directory's lock
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.cuts.is_empty());
    assert_eq!(read_all(&store.find("s").unwrap(), 0).0, pattern(0, 300));
}

#[test]
fn recovery_cuts_a_record_that_fails_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    three_records_then(dir.path(), |f, len| {
        f.write_all_at(&[0xff], len - 7).unwrap()
    });
    reopen_expecting_a_cut(dir.path(), 200, 120, "fails its checksum");
}

#[test]
fn recovery_cuts_a_torn_header_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (1..=21).collect();
    three_records_then(dir.path(), |f, len| f.write_all_at(&garbage, len).unwrap());
    reopen_expecting_a_cut(dir.path(), 300, 21, "record header fails its checksum");
    let dir = tempfile::tempdir().unwrap();
    three_records_then(dir.path(), |f, len| f.write_all_at(&[0; 11], len).unwrap());
    reopen_expecting_a_cut(dir.path(), 300, 11, "less than a record header");
}

#[test]
fn a_last_segment_with_a_torn_header_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    three_records_then(dir.path(), |_, _| {});
    let torn = dir
        .path()
        .join(STREAMS_DIR)
        .join("s")
        .join(format::segment_file_name(900));
    std::fs::write(&torn, b"OASISLOG\x00").unwrap();
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.cuts.is_empty());
    assert!(!torn.exists());
    assert_eq!(store.find("s").unwrap().ranges(), vec![(0, 300)]);
}

#[test]
fn read_only_changes_nothing_and_stops_at_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let (seg, len) = three_records_then(dir.path(), |f, len| f.set_len(len - 1).unwrap());
    let (store, rec) = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(rec.cuts.len(), 1);
    assert!(!rec.cuts[0].removed);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len - 1);
    assert_eq!(store.find("s").unwrap().ranges(), vec![(0, 200)]);
    let s = store.find("s").unwrap();
    assert_eq!(append_now(&store, &s, 200, b"x"), Err(AppendError::Stopped));
}

#[test]
fn a_commit_comes_when_enough_bytes_are_unsynced() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.commit.interval = Duration::from_secs(3600);
    c.commit.bytes = 1000;
    let (store, _) = Store::open(c).unwrap();
    let s = store.stream("g").unwrap();
    // Answered once written: nothing waits, so only the 1000th byte makes a commit.
    for i in 0..10u64 {
        let rx = append_as(&store, &s, i * 100, &pattern(i * 100, 100), false, i == 0);
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_ok());
    }
    let wait = append_as(&store, &s, 1000, &[], true, false);
    assert_eq!(
        wait.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(1000)
    );
    let stats = store.stats().unwrap();
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
    assert_eq!(stats.appends.load(Ordering::Relaxed), 10);
}

#[test]
fn new_streams_are_made_durable_together_by_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.commit.interval = Duration::from_secs(3600);
    c.commit.bytes = 1 << 30;
    c.writers = 1;
    let (store, _) = Store::open(c.clone()).unwrap();
    // Twenty streams' first records, answered once written: no commit yet, none per new
    // segment (each used to sync its header, its directory and the data directory, and to
    // commit every other stream first).
    let streams: Vec<_> = (0..20)
        .map(|i| store.stream(&format!("new/{i}")).unwrap())
        .collect();
    for (i, s) in streams.iter().enumerate() {
        let rx = append_as(&store, s, 0, &pattern(i as u64, 100), false, true);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(0));
    }
    let stats = store.stats().unwrap();
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 0);
    // One wait makes the commit: one syncfs for the twenty files and their directories.
    let wait = append_as(&store, &streams[19], 100, &[], true, false);
    assert_eq!(wait.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(100));
    assert_eq!(stats.syncs.load(Ordering::Relaxed), 1);
    for s in &streams {
        assert_eq!(s.durable_end(), 100, "{}", s.name());
    }
    store.close();
    drop(store);
    let (store, rec) = Store::open(c).unwrap();
    assert!(rec.cuts.is_empty());
    for i in 0..20 {
        let s = store.find(&format!("new/{i}")).unwrap();
        assert_eq!(read_all(&s, 0).0, pattern(i, 100));
    }
}

#[test]
fn an_append_that_waits_is_committed_at_once_with_what_came_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.commit.interval = Duration::from_secs(3600);
    c.commit.bytes = 1 << 30;
    let (store, _) = Store::open(c).unwrap();
    let s = store.stream("g").unwrap();
    let outcomes: Vec<_> = (0..10u64)
        .map(|i| append(&store, &s, i * 100, &pattern(i * 100, 100)))
        .collect();
    // No interval or size makes these commits: the waiting appends do, each answered with a
    // durable end at or past its own.
    for (i, rx) in outcomes.into_iter().enumerate() {
        let end = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert!(end >= (i as u64 + 1) * 100, "append {i} answered at {end}");
    }
    assert_eq!(s.durable_end(), 1000);
}

#[test]
fn a_read_plan_rebuilds_the_bytes_with_its_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(config(dir.path())).unwrap();
    let s = store.stream("p").unwrap();
    let small = FILE_PIECE_BYTES_MIN as usize - 1;
    let large = FILE_PIECE_BYTES_MIN as usize + 5;
    let mut at = 0u64;
    for len in [10, small, large, 3, large] {
        append_now(&store, &s, at, &pattern(at, len)).unwrap();
        at += len as u64;
    }
    append_now(&store, &s, at + 1000, &pattern(at + 1000, 20)).unwrap();
    let end = at + 1020;
    let mut cursor = Cursor::new(Arc::clone(&s), 5);
    let mut wire = Vec::new();
    let (mut files, mut at_end) = (0, false);
    while !at_end {
        let plan = plan_read(&mut cursor).unwrap();
        at_end = plan.at_end;
        for p in plan.pieces {
            match p {
                Piece::Frames(f) => wire.extend(f),
                Piece::File {
                    head,
                    file,
                    pos,
                    len,
                    crc,
                } => {
                    files += 1;
                    wire.extend(head);
                    let mut b = vec![0; len as usize];
                    file.read_exact_at(&mut b, pos).unwrap();
                    wire.extend(b);
                    wire.extend(crc);
                }
            }
        }
    }
    assert_eq!(files, 2, "the two long records go out from the file");
    let mut d = Decoder::new();
    d.feed(&wire);
    let (mut bytes, mut gaps, mut next) = (Vec::new(), Vec::new(), 5);
    while let Some(m) = d.next().unwrap() {
        match m {
            Message::Chunk { offset, bytes: b } => {
                assert_eq!(offset, next);
                next += b.len() as u64;
                bytes.extend(b);
            }
            Message::Gap { from, to } => {
                assert_eq!(from, next);
                next = to;
                gaps.push((from, to));
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(next, end);
    assert_eq!(gaps, vec![(at, at + 1000)]);
    let mut want = pattern(5, at as usize - 5);
    want.extend(pattern(at + 1000, 20));
    assert_eq!(bytes, want);
}

#[test]
fn a_directory_serves_one_server_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = Store::open(config(dir.path())).unwrap();
    assert!(matches!(
        Store::open(config(dir.path())),
        Err(StoreError::Locked(_))
    ));
}

#[test]
fn one_writer_per_stream_and_a_bound_on_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.streams_max = 2;
    let (store, _) = Store::open(c).unwrap();
    let a = store.stream("a").unwrap();
    let claim = a.claim_writer().unwrap();
    assert!(a.claim_writer().is_none());
    drop(claim);
    assert!(a.claim_writer().is_some());
    store.stream("b").unwrap();
    assert!(matches!(
        store.stream("c"),
        Err(StoreError::TooManyStreams(2))
    ));
    // Streams that hold nothing are not listed.
    assert!(store.list("").is_empty());
}

#[test]
fn more_streams_than_open_tails_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.tails_max = 3;
    c.writers = 1;
    let (store, _) = Store::open(c).unwrap();
    let streams: Vec<Arc<Stream>> = (0..10)
        .map(|i| store.stream(&format!("s{i}")).unwrap())
        .collect();
    let stats = store.stats().unwrap();
    // Round after round over every stream: each append finds its segment closed and reopens it.
    let mut ends = [0u64; 10];
    for round in 0..4 {
        let waiting: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let len = 100 + round * 10 + i;
                let r = append(&store, s, ends[i], &pattern(ends[i], len));
                ends[i] += len as u64;
                r
            })
            .collect();
        for (i, r) in waiting.into_iter().enumerate() {
            assert_eq!(
                r.recv_timeout(Duration::from_secs(10)).unwrap(),
                Ok(ends[i])
            );
            assert!(stats.tails_open.load(Ordering::Relaxed) <= 3);
        }
    }
    for (i, s) in streams.iter().enumerate() {
        let (bytes, gaps) = read_all(s, 0);
        assert!(gaps.is_empty());
        assert_eq!(bytes, pattern(0, ends[i] as usize), "stream s{i}");
        assert_eq!(segments_of(dir.path(), &format!("s{i}")).len(), 1);
    }
    drop(store);
    let (store, rec) = Store::open(config(dir.path())).unwrap();
    assert!(rec.cuts.is_empty(), "{:?}", rec.cuts);
    assert_eq!(rec.bytes, ends.iter().sum::<u64>());
    assert_eq!(store.find("s9").unwrap().durable_end(), ends[9]);
}

#[test]
fn without_fsync_a_commit_acknowledges_what_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.commit.sync = false;
    let (store, _) = Store::open(c).unwrap();
    let s = store.stream("s").unwrap();
    assert_eq!(append_now(&store, &s, 0, &pattern(0, 5000)), Ok(5000));
    assert_eq!(store.stats().unwrap().syncs.load(Ordering::Relaxed), 0);
    drop(store);
    let (store, _) = Store::open(config(dir.path())).unwrap();
    assert_eq!(read_all(&store.find("s").unwrap(), 0).0, pattern(0, 5000));
}

#[test]
fn a_batch_answered_on_write_then_a_wait_for_its_commit_and_no_hole_without_opening() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.commit.interval = Duration::from_millis(200);
    c.commit.bytes = 1 << 30;
    let (store, _) = Store::open(c).unwrap();
    let s = store.stream("s").unwrap();
    let send = |offset: u64, bytes: Vec<u8>, durable: bool, opens: bool| {
        append_as(&store, &s, offset, &bytes, durable, opens)
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
    };
    // Answered once written, before any commit: the durable end is still 0.
    assert_eq!(send(0, pattern(0, 3000), false, true), Ok(0));
    // A wait for the bytes up to 3000 is answered by the commit.
    assert_eq!(send(3000, Vec::new(), true, false), Ok(3000));
    // Past the end without opening: refused, no hole.
    assert_eq!(
        send(5000, pattern(5000, 10), true, false),
        Err(AppendError::Unexpected {
            offset: 5000,
            expect: 3000
        })
    );
    // A wait for bytes the stream does not have (a failed commit cut them off) is refused too.
    assert_eq!(
        send(4000, Vec::new(), true, false),
        Err(AppendError::Unexpected {
            offset: 4000,
            expect: 3000
        })
    );
    // Opening a connection may start a segment past the end (the gap is another server's).
    assert_eq!(send(5000, pattern(5000, 10), true, true), Ok(5010));
    assert_eq!(s.ranges(), vec![(0, 3000), (5000, 5010)]);
}
