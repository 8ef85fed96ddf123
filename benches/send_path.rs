//! Benchmarks of the ways the engine can move a file's bytes to a TCP socket.
//!
//! Each iteration sends a whole file (64 KiB, 256 KiB, 1 MiB, 2 MiB; page-cached) over a
//! loopback connection whose far end is a thread draining the socket as fast as it can. Methods:
//!
//! - `uring_read_send`: io_uring READ into a user buffer, then SEND from it;
//! - `uring_read_send_zc`: READ, then SEND_ZC (waits for the notification before reusing the buffer);
//! - `uring_read_fixed_send_zc_fixed`: READ_FIXED into a registered buffer, then SEND_ZC from it;
//! - `uring_splice`: SPLICE file -> pipe linked to SPLICE pipe -> socket;
//! - `sendfile`: plain `sendfile(2)`, what nginx does: the reference;
//! - `tokio`: `tokio::fs::File` read of the whole file, then `TcpStream::write_all`;
//! - `tokio_uring`: `File::read_at`, then `TcpStream::write_all`.
//!
//! On loopback the receiver copies anyway, so zero-copy sends save the sender's copy only; compare
//! as ratios to `sendfile`. Every method's bytes are counted by the drain thread and checked, so a
//! method that silently sent less fails the bench. Timing lives here, never in tests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::Duration;

#[path = "common/aligned.rs"]
mod aligned;
use aligned::{AlignedBuf, PAGE_BYTES};

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use io_uring::{cqueue, opcode, squeue, types, IoUring};

const SIZES_BYTES: [usize; 4] = [64 << 10, 256 << 10, 1 << 20, 2 << 20];
const RING_ENTRIES: u32 = 8;
/// Largest pipe the splice path asks for; the default `pipe-max-size` is 1 MiB.
const PIPE_BYTES_MAX: usize = 1 << 20;
const _: () = assert!(PIPE_BYTES_MAX.is_multiple_of(PAGE_BYTES));

/// The far end of a loopback connection: a thread that reads and discards until EOF.
struct Sink {
    stream: TcpStream,
    drain: Option<JoinHandle<u64>>,
    sent_bytes: u64,
}

impl Sink {
    fn new() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = TcpStream::connect(listener.local_addr().expect("local addr"))
            .expect("connect loopback");
        let (stream, _) = listener.accept().expect("accept loopback");
        let drain = thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut total_bytes = 0u64;
            loop {
                match client.read(&mut buf) {
                    Ok(0) => return total_bytes,
                    Ok(n) => total_bytes += n as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => panic!("drain thread: {e}"),
                }
            }
        });
        Sink {
            stream,
            drain: Some(drain),
            sent_bytes: 0,
        }
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Closes the sending side and checks the drain thread saw every byte sent.
    fn finish(mut self) {
        self.stream.shutdown(Shutdown::Write).expect("shutdown");
        let drained_bytes = self
            .drain
            .take()
            .expect("finished once")
            .join()
            .expect("drain thread");
        assert_eq!(drained_bytes, self.sent_bytes, "bytes lost on the way");
    }
}

fn data_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    std::fs::create_dir_all(&dir).expect("create target/bench-data");
    dir
}

/// A file of `size_bytes` with a non-trivial pattern, created once and reused.
fn data_file(size_bytes: usize) -> PathBuf {
    let path = data_dir().join(format!("send_path_{size_bytes}.bin"));
    let current = std::fs::metadata(&path).map(|m| m.len()).ok();
    if current != Some(size_bytes as u64) {
        let data: Vec<u8> = (0..size_bytes).map(|i| (i * 31 % 251) as u8).collect();
        let mut f = File::create(&path).expect("create data file");
        f.write_all(&data).expect("write data file");
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

/// Submits one entry and returns its result.
///
/// # Safety
/// Every buffer and fd `sqe` refers to must stay valid until this returns (it waits for the CQE).
unsafe fn run_one(ring: &mut IoUring, sqe: &squeue::Entry) -> i32 {
    // SAFETY: the caller keeps what `sqe` points at alive; we wait for its completion below.
    unsafe { ring.submission().push(sqe).expect("ring has room") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    ring.completion().next().expect("one completion").result()
}

/// Submits one SEND_ZC entry and waits for both its result and, if announced, the notification
/// that the kernel no longer references the buffer.
///
/// # Safety
/// As for [`run_one`].
unsafe fn run_send_zc(ring: &mut IoUring, sqe: &squeue::Entry) -> i32 {
    // SAFETY: the caller keeps the buffer alive; we wait below until the kernel released it.
    unsafe { ring.submission().push(sqe).expect("ring has room") };
    let mut result = None;
    let mut notif_pending = false;
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        for cqe in ring.completion() {
            if cqueue::notif(cqe.flags()) {
                notif_pending = false;
            } else {
                result = Some(cqe.result());
                notif_pending = cqueue::more(cqe.flags());
            }
        }
        if let (Some(res), false) = (result, notif_pending) {
            return res;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BufferedSend {
    Plain,
    Zc,
    /// READ_FIXED and SEND_ZC from registered buffer 0.
    ZcFixed,
}

/// Reads the whole file into `buf`, then sends it, one io_uring operation at a time.
fn read_then_send(
    ring: &mut IoUring,
    file: &File,
    sink: &mut Sink,
    buf: &mut AlignedBuf,
    len_bytes: usize,
    mode: BufferedSend,
) {
    assert!(len_bytes <= buf.len());
    let base = buf.as_mut_ptr();
    let mut done = 0;
    while done < len_bytes {
        // SAFETY: `base + done .. base + len_bytes` lies inside `buf` (asserted above).
        let dst = unsafe { base.add(done) };
        let remaining = (len_bytes - done) as u32;
        let fd = types::Fd(file.as_raw_fd());
        let sqe = if mode == BufferedSend::ZcFixed {
            opcode::ReadFixed::new(fd, dst, remaining, 0)
                .offset(done as u64)
                .build()
        } else {
            opcode::Read::new(fd, dst, remaining)
                .offset(done as u64)
                .build()
        };
        // SAFETY: `buf` (registered as buffer 0 in fixed mode) and `file` outlive the call.
        let n = check(unsafe { run_one(ring, &sqe) }, "read");
        assert!(n > 0, "file shorter than expected");
        done += n;
    }
    let mut sent = 0;
    while sent < len_bytes {
        // SAFETY: inside `buf`, as above.
        let src = unsafe { base.add(sent) }.cast_const();
        let remaining = (len_bytes - sent) as u32;
        let fd = types::Fd(sink.fd());
        let res = match mode {
            BufferedSend::Plain => {
                let sqe = opcode::Send::new(fd, src, remaining).build();
                // SAFETY: `buf` and the socket outlive the call, which waits for the CQE.
                unsafe { run_one(ring, &sqe) }
            }
            BufferedSend::Zc | BufferedSend::ZcFixed => {
                let index = (mode == BufferedSend::ZcFixed).then_some(0);
                let sqe = opcode::SendZc::new(fd, src, remaining)
                    .buf_index(index)
                    .build();
                // SAFETY: `buf` and the socket outlive the call, which waits for the notification.
                unsafe { run_send_zc(ring, &sqe) }
            }
        };
        sent += check(res, "send");
    }
    sink.sent_bytes += len_bytes as u64;
}

struct Pipe {
    read: File,
    write: File,
    capacity_bytes: usize,
}

impl Pipe {
    fn new(want_bytes: usize) -> Pipe {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
        // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
        };
        let want = want_bytes.min(PIPE_BYTES_MAX) as libc::c_int;
        // SAFETY: F_SETPIPE_SZ on an open pipe fd; failure is reported, not UB.
        let got = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
        assert!(got > 0, "F_SETPIPE_SZ: {}", io::Error::last_os_error());
        Pipe {
            read,
            write,
            capacity_bytes: got as usize,
        }
    }
}

/// SPLICE file -> pipe linked to SPLICE pipe -> socket, a pipe's worth at a time.
fn splice_file(ring: &mut IoUring, file: &File, pipe: &Pipe, sink: &mut Sink, len_bytes: usize) {
    let mut offset = 0;
    while offset < len_bytes {
        let chunk = (len_bytes - offset).min(pipe.capacity_bytes) as u32;
        let to_pipe = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            offset as i64,
            types::Fd(pipe.write.as_raw_fd()),
            -1,
            chunk,
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(1);
        let to_socket = opcode::Splice::new(
            types::Fd(pipe.read.as_raw_fd()),
            -1,
            types::Fd(sink.fd()),
            -1,
            chunk,
        )
        .build()
        .user_data(2);
        // SAFETY: no buffers are involved; the fds outlive the call, which waits for both CQEs.
        unsafe {
            let mut sq = ring.submission();
            sq.push(&to_pipe).expect("ring has room");
            sq.push(&to_socket).expect("ring has room");
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
                check(out, "splice pipe->socket")
            };
        while pending > 0 {
            let sqe = opcode::Splice::new(
                types::Fd(pipe.read.as_raw_fd()),
                -1,
                types::Fd(sink.fd()),
                -1,
                pending as u32,
            )
            .build();
            // SAFETY: no buffers; the fds outlive the call, which waits for the CQE.
            pending -= check(unsafe { run_one(ring, &sqe) }, "splice pipe->socket");
        }
        offset += in_pipe;
    }
    sink.sent_bytes += len_bytes as u64;
}

fn sendfile_all(file: &File, sink: &mut Sink, len_bytes: usize) {
    let mut offset: libc::off_t = 0;
    while (offset as usize) < len_bytes {
        let remaining = len_bytes - offset as usize;
        // SAFETY: both fds are open for the call; `offset` is a valid, exclusive pointer.
        let n = unsafe { libc::sendfile(sink.fd(), file.as_raw_fd(), &mut offset, remaining) };
        if n < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "sendfile: {e}");
        }
        assert_ne!(n, 0, "file shorter than expected");
    }
    sink.sent_bytes += len_bytes as u64;
}

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
}

fn bench_uring(c: &mut Criterion) {
    for size in SIZES_BYTES {
        let path = data_file(size);
        let file = File::open(&path).expect("open data file");
        let mut group = c.benchmark_group(format!("send_{}KiB", size >> 10));
        configure(&mut group);
        group.throughput(Throughput::Bytes(size as u64));

        for (name, mode) in [
            ("uring_read_send", BufferedSend::Plain),
            ("uring_read_send_zc", BufferedSend::Zc),
            ("uring_read_fixed_send_zc_fixed", BufferedSend::ZcFixed),
        ] {
            let mut ring = IoUring::new(RING_ENTRIES).expect("io_uring_setup");
            let mut buf = AlignedBuf::new(size);
            if mode == BufferedSend::ZcFixed {
                // SAFETY: `ring` is dropped explicitly at the end of this loop body, before `buf`
                // goes out of scope, so the registration never points at freed memory.
                unsafe { ring.submitter().register_buffers(&[buf.iovec()]) }
                    .expect("register buffers");
            }
            let mut sink = Sink::new();
            group.bench_function(name, |b| {
                b.iter(|| read_then_send(&mut ring, &file, &mut sink, &mut buf, size, mode))
            });
            sink.finish();
            drop(ring);
        }

        let mut ring = IoUring::new(RING_ENTRIES).expect("io_uring_setup");
        let pipe = Pipe::new(size);
        let mut sink = Sink::new();
        group.bench_function("uring_splice", |b| {
            b.iter(|| splice_file(&mut ring, &file, &pipe, &mut sink, size))
        });
        sink.finish();

        let mut sink = Sink::new();
        group.bench_function("sendfile", |b| {
            b.iter(|| sendfile_all(&file, &mut sink, size))
        });
        sink.finish();

        bench_tokio(&mut group, &path, size);
        bench_tokio_uring(&mut group, &path, size);
        group.finish();
    }
}

fn bench_tokio(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    path: &PathBuf,
    size: usize,
) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut sink = Sink::new();
    let std_stream = sink.stream.try_clone().expect("dup socket");
    std_stream.set_nonblocking(true).expect("nonblocking");
    let (mut file, mut stream) = rt.block_on(async {
        let file = tokio::fs::File::open(path).await.expect("open data file");
        let stream = tokio::net::TcpStream::from_std(std_stream).expect("register socket");
        (file, stream)
    });
    let mut buf = vec![0u8; size];
    group.bench_function("tokio", |b| {
        b.iter(|| {
            rt.block_on(async {
                file.seek(io::SeekFrom::Start(0)).await.expect("seek");
                file.read_exact(&mut buf).await.expect("read");
                stream.write_all(&buf).await.expect("write_all");
            });
            sink.sent_bytes += size as u64;
        })
    });
    rt.block_on(async { stream.flush().await.expect("flush") });
    drop(stream);
    sink.finish();
}

fn bench_tokio_uring(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    path: &PathBuf,
    size: usize,
) {
    use tokio_uring::buf::BoundedBuf;

    let rt = tokio_uring::Runtime::new(&tokio_uring::builder()).expect("tokio-uring runtime");
    let mut sink = Sink::new();
    let std_stream = sink.stream.try_clone().expect("dup socket");
    let (file, stream) = rt.block_on(async {
        let file = tokio_uring::fs::File::open(path)
            .await
            .expect("open data file");
        (file, tokio_uring::net::TcpStream::from_std(std_stream))
    });
    let mut spare = Some(Vec::with_capacity(size));
    group.bench_function("tokio_uring", |b| {
        b.iter(|| {
            let mut buf = spare.take().expect("buffer returned");
            buf.clear();
            buf = rt.block_on(async {
                while buf.len() < size {
                    let filled = buf.len();
                    let (res, slice) = file.read_at(buf.slice(filled..size), filled as u64).await;
                    let n = res.expect("read_at");
                    assert!(n > 0, "file shorter than expected");
                    buf = slice.into_inner();
                }
                let (res, buf) = stream.write_all(buf).await;
                res.expect("write_all");
                buf
            });
            spare = Some(buf);
            sink.sent_bytes += size as u64;
        })
    });
    rt.block_on(async move {
        drop(stream);
        file.close().await.expect("close");
    });
    sink.finish();
}

criterion_group!(benches, bench_uring);
criterion_main!(benches);
