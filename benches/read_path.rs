//! Benchmarks of the ways the engine can read a media file from disk with io_uring.
//!
//! Each iteration reads a whole 256 MiB file (created once in `target/bench-data`, or in
//! `$OASIS_BENCH_DATA` when set) in 64 KiB, 256 KiB, 1 MiB and 2 MiB blocks:
//!
//! - `buffered_read`: READ through the page cache into plain page-aligned buffers, 8 in flight;
//! - `direct_read_fixed`: O_DIRECT + READ_FIXED into registered 4096-aligned buffers, 8 in flight;
//! - `splice_to_pipe`: SPLICE file -> pipe linked to SPLICE pipe -> /dev/null (the pipe has to be
//!   emptied for the next block), one pair at a time.
//!
//! By default the numbers are hot: after the first pass the file sits in the page cache (except
//! for O_DIRECT, which always goes to the device). With `OASIS_BENCH_COLD=1` every iteration first
//! evicts the file (`posix_fadvise(DONTNEED)`, which drops just this file's pages), outside the
//! timed part; `OASIS_BENCH_COLD=drop` also writes 1 to `/proc/sys/vm/drop_caches` when permitted
//! (root; it evicts everyone's cache, so not the default on a shared machine). `benches/fio_limit.sh` runs fio on the same file and
//! block sizes: the limit these numbers are compared to. Timing lives here, never in tests.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "common/aligned.rs"]
mod aligned;
use aligned::{AlignedBuf, PAGE_BYTES};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use io_uring::{opcode, squeue, types, IoUring};

const FILE_BYTES: usize = 256 << 20;
const BLOCKS_BYTES: [usize; 4] = [64 << 10, 256 << 10, 1 << 20, 2 << 20];
const QUEUE_DEPTH: usize = 8;
const _: () = assert!(
    FILE_BYTES.is_multiple_of(2 << 20),
    "every block size divides the file"
);
const _: () = assert!(
    (64 << 10) % PAGE_BYTES == 0,
    "O_DIRECT blocks are page multiples"
);

fn data_file() -> PathBuf {
    let dir = std::env::var_os("OASIS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    std::fs::create_dir_all(&dir).expect("create bench data dir");
    let path = dir.join("read_path_256MiB.bin");
    let current = std::fs::metadata(&path).map(|m| m.len()).ok();
    if current != Some(FILE_BYTES as u64) {
        let chunk: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 31 % 251) as u8).collect();
        let mut f = File::create(&path).expect("create data file");
        for _ in 0..FILE_BYTES / chunk.len() {
            f.write_all(&chunk).expect("write data file");
        }
        f.sync_all().expect("sync data file");
    }
    path
}

fn check(res: i32, what: &str) -> usize {
    if res < 0 {
        panic!("{what}: {}", io::Error::from_raw_os_error(-res));
    }
    res as usize
}

fn cold_requested() -> bool {
    std::env::var_os("OASIS_BENCH_COLD").is_some_and(|v| v == "1" || v == "drop")
}

fn drop_caches_requested() -> bool {
    std::env::var_os("OASIS_BENCH_COLD").is_some_and(|v| v == "drop")
}

/// Evicts the file from the page cache (outside the timed part of an iteration).
fn evict(file: &File) {
    // SAFETY: fadvise on an open fd; offset 0 and length 0 mean the whole file.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise: {}", io::Error::from_raw_os_error(rc));
    if drop_caches_requested() {
        // Only root on a host that allows it may drop the whole cache; say so once if refused.
        if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "1") {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| eprintln!("drop_caches refused ({e}); fadvise only"));
        }
    }
}

/// Reads the whole file in `block_bytes` blocks keeping one read per buffer in flight. With
/// `fixed`, the buffers are registered with the ring in order and READ_FIXED is used.
fn read_pipelined(
    ring: &mut IoUring,
    file: &File,
    bufs: &mut [AlignedBuf],
    block_bytes: usize,
    fixed: bool,
) {
    let blocks = FILE_BYTES / block_bytes;
    let mut next_block = 0;
    let mut in_flight = 0;
    let mut done_bytes = 0;
    let fd = types::Fd(file.as_raw_fd());
    let submit = |ring: &mut IoUring, slot: usize, block: usize, buf: &mut AlignedBuf| {
        let offset = (block * block_bytes) as u64;
        let len = block_bytes as u32;
        let sqe = if fixed {
            opcode::ReadFixed::new(fd, buf.as_mut_ptr(), len, slot as u16)
                .offset(offset)
                .build()
        } else {
            opcode::Read::new(fd, buf.as_mut_ptr(), len)
                .offset(offset)
                .build()
        };
        // SAFETY: `buf` (registered at index `slot` in fixed mode) and `file` outlive this pass,
        // which waits for every completion before returning; each slot has one read at a time.
        unsafe { ring.submission().push(&sqe.user_data(slot as u64)) }.expect("ring has room");
    };
    for (slot, buf) in bufs.iter_mut().enumerate().take(blocks) {
        submit(ring, slot, next_block, buf);
        next_block += 1;
        in_flight += 1;
    }
    while in_flight > 0 {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let completed: Vec<(usize, i32)> = ring
            .completion()
            .map(|cqe| (cqe.user_data() as usize, cqe.result()))
            .collect();
        for (slot, res) in completed {
            in_flight -= 1;
            let n = check(res, "read");
            assert_eq!(n, block_bytes, "short read");
            done_bytes += n;
            if next_block < blocks {
                submit(ring, slot, next_block, &mut bufs[slot]);
                next_block += 1;
                in_flight += 1;
            }
        }
    }
    assert_eq!(done_bytes, FILE_BYTES);
}

/// SPLICE file -> pipe linked to SPLICE pipe -> /dev/null, one block at a time.
fn splice_through_pipe(
    ring: &mut IoUring,
    file: &File,
    pipe: &(File, File),
    null: &File,
    block_bytes: usize,
) {
    let (pipe_read, pipe_write) = pipe;
    let mut offset = 0;
    while offset < FILE_BYTES {
        let to_pipe = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            offset as i64,
            types::Fd(pipe_write.as_raw_fd()),
            -1,
            block_bytes as u32,
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(1);
        let to_null = opcode::Splice::new(
            types::Fd(pipe_read.as_raw_fd()),
            -1,
            types::Fd(null.as_raw_fd()),
            -1,
            block_bytes as u32,
        )
        .build()
        .user_data(2);
        // SAFETY: no buffers are involved; the fds outlive the call, which waits for both CQEs.
        unsafe {
            let mut sq = ring.submission();
            sq.push(&to_pipe).expect("ring has room");
            sq.push(&to_null).expect("ring has room");
        }
        ring.submit_and_wait(2).expect("io_uring_enter");
        let (mut in_pipe, mut out) = (0i32, 0i32);
        for cqe in ring.completion() {
            match cqe.user_data() {
                1 => in_pipe = cqe.result(),
                _ => out = cqe.result(),
            }
        }
        let in_pipe = check(in_pipe, "splice file->pipe");
        assert!(in_pipe > 0, "file shorter than expected");
        // A short first splice cancels the linked one: drain what is left in the pipe.
        let mut pending = in_pipe
            - if out == -libc::ECANCELED {
                0
            } else {
                check(out, "splice pipe->null")
            };
        while pending > 0 {
            let sqe = opcode::Splice::new(
                types::Fd(pipe_read.as_raw_fd()),
                -1,
                types::Fd(null.as_raw_fd()),
                -1,
                pending as u32,
            )
            .build();
            // SAFETY: no buffers; the fds outlive the call, which waits for the CQE.
            unsafe { ring.submission().push(&sqe) }.expect("ring has room");
            ring.submit_and_wait(1).expect("io_uring_enter");
            let res = ring.completion().next().expect("one completion").result();
            pending -= check(res, "splice pipe->null");
        }
        offset += in_pipe;
    }
}

fn pipe_of(capacity_bytes: usize) -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (read, write) = unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    };
    // SAFETY: F_SETPIPE_SZ on an open pipe fd; failure is reported, not UB.
    let got = unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            capacity_bytes as libc::c_int,
        )
    };
    assert!(
        got as usize >= capacity_bytes,
        "F_SETPIPE_SZ {capacity_bytes}: {} (raise /proc/sys/fs/pipe-max-size or run as root)",
        io::Error::last_os_error()
    );
    (read, write)
}

/// Times `iters` passes of `pass`, evicting the file before each one in cold mode.
fn timed(iters: u64, file: &File, mut pass: impl FnMut()) -> Duration {
    let cold = cold_requested();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        if cold {
            evict(file);
        }
        let start = Instant::now();
        pass();
        total += start.elapsed();
    }
    total
}

fn bench_read(c: &mut Criterion) {
    let path = data_file();
    let buffered = File::open(&path).expect("open data file");
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("open data file with O_DIRECT (the file system must support it)");
    let null = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    let suffix = if cold_requested() { "_cold" } else { "" };

    for block_bytes in BLOCKS_BYTES {
        let mut group = c.benchmark_group(format!("read_256MiB_{}KiB{suffix}", block_bytes >> 10));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Bytes(FILE_BYTES as u64));

        let mut ring = IoUring::new(2 * QUEUE_DEPTH as u32).expect("io_uring_setup");
        let mut bufs: Vec<AlignedBuf> = (0..QUEUE_DEPTH)
            .map(|_| AlignedBuf::new(block_bytes))
            .collect();
        group.bench_function("buffered_read", |b| {
            b.iter_custom(|iters| {
                timed(iters, &buffered, || {
                    read_pipelined(&mut ring, &buffered, &mut bufs, block_bytes, false)
                })
            })
        });

        let mut fixed_ring = IoUring::new(2 * QUEUE_DEPTH as u32).expect("io_uring_setup");
        let iovecs: Vec<libc::iovec> = bufs.iter_mut().map(AlignedBuf::iovec).collect();
        // SAFETY: `fixed_ring` is dropped explicitly below, before `bufs`, so the registered
        // buffers never point at freed memory.
        unsafe { fixed_ring.submitter().register_buffers(&iovecs) }.expect("register buffers");
        group.bench_function("direct_read_fixed", |b| {
            b.iter_custom(|iters| {
                timed(iters, &direct, || {
                    read_pipelined(&mut fixed_ring, &direct, &mut bufs, block_bytes, true)
                })
            })
        });
        drop(fixed_ring);

        let pipe = pipe_of(block_bytes);
        group.bench_function("splice_to_pipe", |b| {
            b.iter_custom(|iters| {
                timed(iters, &buffered, || {
                    splice_through_pipe(&mut ring, &buffered, &pipe, &null, block_bytes)
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_read);
criterion_main!(benches);
