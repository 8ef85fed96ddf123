//! The log session driven in memory over a real store: bytes in, transmits carried out as the
//! engine would (a `Defer` gets a completer the store's writer thread completes; jobs run at
//! once; file ranges are read), a fake clock. Covers the writer's handshake, acks, refusals and
//! backpressure, corrupt frames, reading with gaps and long records, following, and lists.

use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use oasis_engine::{Completer, JobResult, Resource, ResourceManager, Session, Transmit};

use super::*;
use crate::proto::{encode, encode_data, kind, refuse, Decoder, Message};
use crate::store::{Store, StoreConfig, FILE_PIECE_BYTES_MIN};

struct Driver {
    session: LogSession,
    now: Instant,
    input: Vec<u8>,
    wire: Vec<u8>,
    decoder: Decoder,
    closed: bool,
    done_tx: Sender<JobResult>,
    done_rx: Receiver<JobResult>,
    /// Completers not yet delivered (`hold`): the store's answers wait here.
    held: usize,
    hold: bool,
    /// The next job is refused as a full job queue would (`JobRejected`, at once).
    reject_next_job: bool,
    /// Byte sends are not taken (a peer that does not read): the one in flight waits here.
    stall_sends: bool,
    stalled: Option<Vec<u8>>,
}

impl Driver {
    fn new(svc: &LogdService) -> Driver {
        let (done_tx, done_rx) = channel();
        let now = Instant::now();
        Driver {
            session: svc.session(now),
            now,
            input: Vec::new(),
            wire: Vec::new(),
            decoder: Decoder::new(),
            closed: false,
            done_tx,
            done_rx,
            held: 0,
            hold: false,
            reject_next_job: false,
            stall_sends: false,
            stalled: None,
        }
    }

    fn send(&mut self, msg: &Message) {
        let mut b = Vec::new();
        encode(msg, &mut b);
        self.send_bytes(&b);
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.input.extend_from_slice(b);
        self.pump();
    }

    /// Feeds input while the session takes it, carrying out transmits in between.
    fn pump(&mut self) {
        loop {
            self.run();
            if self.closed || self.input.is_empty() || !self.session.wants_input() {
                return;
            }
            let n = self.session.on_input(&self.input, self.now);
            self.input.drain(..n);
            if n == 0 {
                self.run();
                return;
            }
        }
    }

    /// Carries out transmits until the session idles, waits or closes.
    fn run(&mut self) {
        // As the engine: no transmit is asked for while one is in flight.
        while !self.closed && self.stalled.is_none() {
            match self.session.poll_transmit(self.now) {
                Transmit::Bytes(b) if self.stall_sends => {
                    self.stalled = Some(b);
                    return;
                }
                Transmit::Bytes(b) => {
                    self.wire.extend_from_slice(&b);
                    self.session.on_sent(Ok(b.len() as u64), Some(b), self.now);
                }
                Transmit::FileWithHead { head, .. } => {
                    // As the engine's zero-copy path: the head alone, then a `File` for the rest.
                    self.wire.extend_from_slice(&head);
                    self.session
                        .on_sent(Ok(head.len() as u64), Some(head), self.now);
                }
                Transmit::File { file, offset, len } => {
                    // At most 10,000 bytes a send: the rest is asked for again.
                    let n = len.min(10_000);
                    let mut b = vec![0; n as usize];
                    file.read_exact_at(&mut b, offset).unwrap();
                    self.wire.extend_from_slice(&b);
                    self.session.on_sent(Ok(n), None, self.now);
                }
                Transmit::Defer(work) => {
                    let tx = self.done_tx.clone();
                    work(Completer::from_fn(move |r| tx.send(r).unwrap()));
                    self.held += 1;
                    if self.hold {
                        return;
                    }
                    self.deliver();
                }
                Transmit::Job(job) if std::mem::take(&mut self.reject_next_job) => {
                    drop(job);
                    let rejected = Box::new(oasis_engine::JobRejected);
                    self.session.on_job_done(rejected, self.now);
                    // As the engine: nothing drives the session again before its deadline.
                    return;
                }
                Transmit::Job(job) => self.session.on_job_done(job(), self.now),
                Transmit::Close => self.closed = true,
                Transmit::Idle | Transmit::WaitUntil(_) => return,
                Transmit::Open(_) | Transmit::Create(_) | Transmit::Write { .. } => {
                    panic!("the log session opens and writes no file")
                }
            }
        }
    }

    /// Hands the held store answers to the session.
    fn deliver(&mut self) {
        while self.held > 0 {
            let r = self.done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            self.held -= 1;
            self.session.on_job_done(r, self.now);
        }
        self.pump();
    }

    /// The peer reads again: the stalled send and what follows go out.
    fn read_again(&mut self) {
        self.stall_sends = false;
        while let Some(b) = self.stalled.take() {
            self.wire.extend_from_slice(&b);
            self.session.on_sent(Ok(b.len() as u64), Some(b), self.now);
            self.run();
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        if self.session.deadline().is_some_and(|t| t <= self.now) {
            self.session.on_deadline(self.now);
        }
        if self.session.wants_close() {
            self.closed = true;
        }
        self.pump();
    }

    /// The messages sent since the last call.
    fn received(&mut self) -> Vec<Message> {
        self.decoder.feed(&std::mem::take(&mut self.wire));
        let mut v = Vec::new();
        while let Some(m) = self.decoder.next().unwrap() {
            v.push(m);
        }
        v
    }
}

fn service() -> (LogdService, tempfile::TempDir) {
    service_with(None)
}

/// A service whose connections reserve from `rm`.
fn service_with(rm: Option<Arc<ResourceManager>>) -> (LogdService, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = StoreConfig::new(dir.path());
    c.commit.interval = Duration::from_millis(1);
    let (store, _) = Store::open(c).unwrap();
    (LogdService::new(store, rm), dir)
}

fn hello(stream: &str, oldest_unacked: u64) -> Message {
    Message::Hello {
        version: 1,
        stream: stream.into(),
        oldest_unacked,
    }
}

fn data(offset: u64, len: usize) -> Message {
    Message::Data {
        offset,
        bytes: bytes(offset, len),
    }
}

fn bytes(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (i % 241) as u8)
        .collect()
}

fn refusal(m: &Message) -> (u8, u64) {
    match m {
        Message::Refuse { code, expect, .. } => (*code, *expect),
        m => panic!("not a refusal: {m:?}"),
    }
}

#[test]
fn a_shipper_is_welcomed_acked_and_told_where_to_resume() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("app/events", 0));
    assert_eq!(
        d.received(),
        vec![Message::Welcome {
            expect: 0,
            durable_end: 0
        }]
    );
    d.send(&data(0, 100));
    assert_eq!(d.received(), vec![Message::Ack { durable_end: 100 }]);
    d.send(&data(50, 10));
    let got = d.received();
    assert_eq!(refusal(&got[0]), (refuse::UNEXPECTED_OFFSET, 100));
    assert!(!d.closed, "code 1 keeps the connection");
    d.send(&data(100, 5000));
    assert_eq!(d.received(), vec![Message::Ack { durable_end: 5100 }]);
    // The shipper goes; a new connection learns the durable end.
    drop(d);
    let mut d = Driver::new(&svc);
    d.send(&hello("app/events", 10));
    assert_eq!(
        d.received(),
        vec![Message::Welcome {
            expect: 5100,
            durable_end: 5100
        }]
    );
}

#[test]
fn a_server_that_holds_less_starts_at_the_oldest_unacked_byte() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 7000));
    assert_eq!(
        d.received(),
        vec![Message::Welcome {
            expect: 7000,
            durable_end: 0
        }]
    );
    d.send(&data(7000, 10));
    assert_eq!(d.received(), vec![Message::Ack { durable_end: 7010 }]);
    assert_eq!(svc.store().find("s").unwrap().ranges(), vec![(7000, 7010)]);
}

#[test]
fn hellos_that_are_refused() {
    let (svc, _dir) = service();
    let mut first = Driver::new(&svc);
    first.send(&hello("s", 0));
    first.received();
    let cases = [
        (hello("s", 0), refuse::STREAM_BUSY),
        (hello("../x", 0), refuse::BAD_HELLO),
        (
            Message::Hello {
                version: 2,
                stream: "t".into(),
                oldest_unacked: 0,
            },
            refuse::BAD_HELLO,
        ),
        (data(0, 1), refuse::BAD_HELLO),
    ];
    for (msg, code) in cases {
        let mut d = Driver::new(&svc);
        d.send(&msg);
        let got = d.received();
        assert_eq!(refusal(&got[0]).0, code, "{msg:?}: {got:?}");
        assert!(d.closed, "{msg:?} closes");
    }
    // The first writer's claim ends with its connection.
    drop(first);
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 0));
    assert!(matches!(d.received()[0], Message::Welcome { .. }));
}

#[test]
fn a_corrupt_frame_closes_and_keeps_nothing() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 0));
    d.received();
    let mut f = Vec::new();
    encode_data(0, &bytes(0, 300), &mut f);
    f[100] ^= 4;
    d.send_bytes(&f);
    assert!(d.closed);
    assert_eq!(d.received(), vec![]);
    assert_eq!(svc.store().find("s").unwrap().durable_end(), 0);
}

#[test]
fn a_full_batch_stops_input_until_the_store_answers() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 0));
    d.received();
    d.hold = true;
    let mut frames = Vec::new();
    let piece = 256 * 1024;
    for i in 0..12u64 {
        encode_data(
            i * piece as u64,
            &bytes(i * piece as u64, piece),
            &mut frames,
        );
    }
    d.send_bytes(&frames);
    // One batch with the store, the next full: the rest of the input waits.
    assert_eq!(d.held, 1);
    assert!(!d.session.wants_input());
    assert!(!d.input.is_empty());
    while d.held > 0 {
        d.deliver();
    }
    assert!(d.input.is_empty());
    let acks = d.received();
    assert_eq!(
        acks.last(),
        Some(&Message::Ack {
            durable_end: 12 * piece as u64
        })
    );
    assert!(acks.len() >= 2, "{acks:?}");
}

/// Writes `lens` consecutive appends to `stream` from `at`, through a session.
fn write(svc: &LogdService, stream: &str, at: u64, lens: &[usize]) -> u64 {
    let mut d = Driver::new(svc);
    d.send(&hello(stream, at));
    let mut at = match d.received()[0] {
        Message::Welcome { expect, .. } => expect,
        ref m => panic!("{m:?}"),
    };
    for &len in lens {
        d.send(&data(at, len));
        at += len as u64;
        assert_eq!(d.received(), vec![Message::Ack { durable_end: at }]);
    }
    at
}

/// The bytes and gaps of a reader's answer, and the `END` offsets.
fn answer(msgs: &[Message]) -> (Vec<u8>, Vec<(u64, u64)>, Vec<u64>) {
    let (mut b, mut gaps, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for m in msgs {
        match m {
            Message::Chunk { bytes, .. } => b.extend_from_slice(bytes),
            Message::Gap { from, to } => gaps.push((*from, *to)),
            Message::End { offset } => ends.push(*offset),
            m => panic!("{m:?}"),
        }
    }
    (b, gaps, ends)
}

#[test]
fn a_reader_gets_chunks_gaps_and_end_then_the_connection_closes() {
    let (svc, _dir) = service();
    let long = FILE_PIECE_BYTES_MIN as usize + 1000;
    let end = write(&svc, "r", 0, &[10, long, 20]);
    let far = write(&svc, "r", end + 500, &[long]);
    let mut d = Driver::new(&svc);
    d.send(&Message::Read {
        stream: "r".into(),
        from: 3,
        follow: false,
    });
    let (got, gaps, ends) = answer(&d.received());
    let mut want = bytes(3, end as usize - 3);
    want.extend(bytes(end + 500, long));
    assert_eq!(got, want);
    assert_eq!(gaps, vec![(end, end + 500)]);
    assert_eq!(ends, vec![far]);
    assert!(d.closed);
    // A stream the server never had: just END.
    let mut d = Driver::new(&svc);
    d.send(&Message::Read {
        stream: "none".into(),
        from: 0,
        follow: false,
    });
    assert_eq!(d.received(), vec![Message::End { offset: 0 }]);
}

#[test]
fn a_follower_gets_what_becomes_durable() {
    let (svc, _dir) = service();
    let mut r = Driver::new(&svc);
    r.send(&Message::Read {
        stream: "f".into(),
        from: 0,
        follow: true,
    });
    assert_eq!(r.received(), vec![Message::End { offset: 0 }]);
    let end = write(&svc, "f", 0, &[40, 60]);
    r.advance(FOLLOW_POLL);
    let (got, _, ends) = answer(&r.received());
    assert_eq!(got, bytes(0, end as usize));
    assert_eq!(ends, vec![end]);
    // Nothing new: no frames, still open.
    r.advance(FOLLOW_POLL);
    assert_eq!(r.received(), vec![]);
    assert!(!r.closed);
}

#[test]
fn a_list_names_the_streams_held() {
    let (svc, _dir) = service();
    write(&svc, "a/x", 0, &[5]);
    write(&svc, "a/y", 100, &[7]);
    write(&svc, "b", 0, &[1]);
    let mut d = Driver::new(&svc);
    d.send(&Message::List {
        prefix: "a/".into(),
    });
    let got = d.received();
    assert_eq!(
        got,
        vec![
            Message::Stream {
                stream: "a/x".into(),
                first: 0,
                durable_end: 5,
                held: 5
            },
            Message::Stream {
                stream: "a/y".into(),
                first: 100,
                durable_end: 107,
                held: 7
            },
            Message::End { offset: 2 },
        ]
    );
    assert!(d.closed);
    assert_eq!(got[0].kind(), kind::STREAM);
}

#[test]
fn a_silent_writer_times_out() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 0));
    d.advance(IDLE_TIMEOUT - Duration::from_secs(1));
    assert!(!d.closed);
    d.advance(Duration::from_secs(1));
    assert!(d.closed);
}

#[test]
fn a_plan_refused_by_a_full_job_queue_is_tried_again_at_the_deadline() {
    let (svc, _dir) = service();
    let end = write(&svc, "q", 0, &[300]);
    let mut r = Driver::new(&svc);
    r.reject_next_job = true;
    r.send(&Message::Read {
        stream: "q".into(),
        from: 0,
        follow: false,
    });
    assert_eq!(r.received(), vec![]);
    let wake = r.session.deadline().expect("a deadline to try again");
    assert!(!r.closed);
    r.advance(wake - r.now);
    let (got, _, ends) = answer(&r.received());
    assert_eq!(got, bytes(0, end as usize));
    assert_eq!(ends, vec![end]);
}

#[test]
fn a_reader_that_sends_more_is_closed_without_a_refusal() {
    let (svc, _dir) = service();
    let mut r = Driver::new(&svc);
    r.send(&Message::Read {
        stream: "x".into(),
        from: 0,
        follow: true,
    });
    assert_eq!(r.received(), vec![Message::End { offset: 0 }]);
    r.send(&hello("x", 0));
    assert!(r.closed);
    assert_eq!(r.received(), vec![]);
}

#[test]
fn idle_connections_reserve_their_base_and_a_streaming_one_what_it_holds() {
    // 200 connections in 3 MiB: at the 3.3 MB a connection used to reserve, not one would fit.
    let rm = super::memory::budget_for_test(3 << 20);
    let (svc, _dir) = service_with(Some(Arc::clone(&rm)));
    let used = || rm.used(Resource::MemoryBytes);
    let mut idle: Vec<Driver> = (0..200)
        .map(|i| {
            let mut d = Driver::new(&svc);
            d.send(&hello(&format!("s{i}"), 0));
            d.send(&data(0, 100));
            let got = d.received();
            assert_eq!(
                got.last(),
                Some(&Message::Ack { durable_end: 100 }),
                "{got:?}"
            );
            d
        })
        .collect();
    assert_eq!(used(), 200 * CONN_BASE_BYTES);
    // One streams a batch while another is with the store: it reserves them, then gives them
    // back, and the budget is never passed (the Resource Manager refuses past it).
    let d = &mut idle[0];
    d.hold = true;
    let piece = 256 * 1024;
    let mut frames = Vec::new();
    for i in 0..6u64 {
        let at = 100 + i * piece as u64;
        encode_data(at, &bytes(at, piece), &mut frames);
    }
    d.send_bytes(&frames);
    assert_eq!(d.held, 1);
    let streaming = used();
    assert!(
        streaming >= 200 * CONN_BASE_BYTES + (1 << 20),
        "{streaming}"
    );
    assert!(streaming <= rm.limit(Resource::MemoryBytes));
    while d.held > 0 {
        d.deliver();
    }
    assert_eq!(
        d.received().last(),
        Some(&Message::Ack {
            durable_end: 100 + 6 * piece as u64
        })
    );
    assert_eq!(used(), 200 * CONN_BASE_BYTES);
    drop(idle);
    assert_eq!(used(), 0);
}

#[test]
fn a_frame_the_budget_cannot_hold_waits_for_the_batch_or_is_refused() {
    let mib = 1 << 20;
    let rm = super::memory::budget_for_test(2 * CONN_BASE_BYTES + 1536 * 1024);
    let (svc, _dir) = service_with(Some(Arc::clone(&rm)));
    let mut a = Driver::new(&svc);
    a.send(&hello("a", 0));
    a.received();
    a.hold = true;
    // A 1 MiB frame fits; the next does not while the first is with the store: input waits.
    let mut frames = Vec::new();
    encode_data(0, &bytes(0, mib), &mut frames);
    encode_data(mib as u64, &bytes(mib as u64, mib), &mut frames);
    a.send_bytes(&frames);
    assert_eq!(a.held, 1);
    assert!(!a.session.wants_input());
    assert!(!a.input.is_empty());
    assert!(rm.used(Resource::MemoryBytes) <= rm.limit(Resource::MemoryBytes));
    // Meanwhile a second connection holding nothing gets no memory for its frame: refused.
    let mut b = Driver::new(&svc);
    b.send(&hello("b", 0));
    assert!(matches!(b.received()[0], Message::Welcome { .. }));
    b.send(&data(0, mib));
    assert!(b.closed);
    assert_eq!(refusal(&b.received()[0]).0, refuse::AT_LIMIT);
    // The first batch's answer gives its memory back: the second frame goes in.
    a.deliver();
    while a.held > 0 {
        a.deliver();
    }
    assert!(a.input.is_empty());
    assert_eq!(
        a.received().last(),
        Some(&Message::Ack {
            durable_end: 2 * mib as u64
        })
    );
    assert!(svc.store().find("b").is_none_or(|s| s.durable_end() == 0));
    drop((a, b));
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

#[test]
fn a_streaming_shipper_hands_its_next_batch_before_the_commit_and_is_acked_after_it() {
    let (svc, _dir) = service();
    let mut d = Driver::new(&svc);
    d.send(&hello("s", 0));
    d.received();
    d.hold = true;
    let piece = 256 * 1024;
    let mut frames = Vec::new();
    for i in 0..6u64 {
        let at = i * piece as u64;
        encode_data(at, &bytes(at, piece), &mut frames);
    }
    d.send_bytes(&frames);
    // The first, full batch is answered once written: no ACK (nothing durable yet), and the
    // second batch goes to the store at once.
    assert_eq!(d.held, 1);
    let r = d.done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    d.held -= 1;
    d.session.on_job_done(r, d.now);
    d.run();
    assert_eq!(d.received(), vec![]);
    assert_eq!(d.held, 1, "the next batch is with the store");
    // The second, short batch is answered once durable, with everything before it.
    d.hold = false;
    d.deliver();
    assert_eq!(
        d.received(),
        vec![Message::Ack {
            durable_end: 6 * piece as u64
        }]
    );
}

/// A writer connection whose peer sends 3,000 one-byte `DATA` frames at a wrong offset and
/// reads none of the refusals; the frames are returned.
fn writer_not_reading_its_refusals(svc: &LogdService) -> (Driver, Vec<u8>) {
    let mut d = Driver::new(svc);
    d.send(&hello("s", 0));
    assert!(matches!(d.received()[0], Message::Welcome { .. }));
    d.stall_sends = true;
    let mut frames = Vec::new();
    for i in 0..3000u64 {
        encode_data(1_000_000 + i, b"x", &mut frames);
    }
    d.send_bytes(&frames);
    (d, frames)
}

#[test]
fn answers_a_peer_does_not_read_are_covered_by_its_reservation() {
    // A shipper that sends DATA at a wrong offset and reads none of the refusals: the queue of
    // REFUSE frames grows to its bound (then input stops), and every byte of it is reserved.
    // (A debug build checks after each input that what a session holds is covered.)
    let rm = super::memory::budget_for_test(16 << 20);
    let (svc, _dir) = service_with(Some(Arc::clone(&rm)));
    let (mut d, frames) = writer_not_reading_its_refusals(&svc);
    assert!(!d.session.wants_input(), "the queue of answers stops input");
    assert!(!d.input.is_empty(), "not every frame was taken");
    let taken = 3000 - d.input.len() / (frames.len() / 3000);
    assert!(taken > 500, "only {taken} frames taken");
    assert!(
        rm.used(Resource::MemoryBytes) >= CONN_BASE_BYTES + 64 * 1024,
        "{} bytes reserved for {taken} refusals queued",
        rm.used(Resource::MemoryBytes)
    );
    // Once the peer reads, the queue drains and the reservation shrinks back to the base.
    d.read_again();
    let got = d.received();
    assert!(
        got.len() >= taken,
        "{} answers for {taken} frames",
        got.len()
    );
    assert!(got
        .iter()
        .all(|m| refusal(m) == (refuse::UNEXPECTED_OFFSET, 0)));
    drop(d);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

#[test]
fn a_queue_of_answers_the_budget_cannot_hold_closes_the_connection() {
    let rm = super::memory::budget_for_test(CONN_BASE_BYTES + 16 * 1024);
    let (svc, _dir) = service_with(Some(Arc::clone(&rm)));
    let (mut d, _frames) = writer_not_reading_its_refusals(&svc);
    assert!(!d.session.wants_input());
    assert!(rm.used(Resource::MemoryBytes) <= rm.limit(Resource::MemoryBytes));
    d.read_again();
    assert!(d.closed, "the connection ends at the budget");
    assert!(
        !d.input.is_empty(),
        "the frames past the budget were not taken"
    );
    drop(d);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

#[test]
fn a_frame_whose_batch_leaves_while_its_body_arrives_stays_covered() {
    // A DATA frame's head arrives while the pending batch would take it by merging; before its
    // body is all in, the batch goes to the store, so the payload starts a new batch (a new
    // list of payloads). Whatever the sizes, what the session holds stays reserved (a debug
    // build checks after every input), across the 16 KiB steps reservations grow by.
    let mib = 1 << 20;
    for third in (10_000..10_000 + 16 * 1024).step_by(512) {
        let rm = super::memory::budget_for_test(64 << 20);
        let (svc, _dir) = service_with(Some(Arc::clone(&rm)));
        let mut d = Driver::new(&svc);
        d.send(&hello("s", 0));
        d.received();
        d.hold = true;
        let mut frames = Vec::new();
        encode_data(0, &bytes(0, mib), &mut frames);
        encode_data(mib as u64, &bytes(mib as u64, 40_000), &mut frames);
        let at = mib as u64 + 40_000;
        let before = frames.len();
        encode_data(at, &bytes(at, third), &mut frames);
        let split = before + (frames.len() - before) / 2;
        d.send_bytes(&frames[..split]);
        assert_eq!(d.held, 1, "the first batch is with the store");
        d.deliver();
        assert_eq!(d.held, 1, "the second batch went to the store mid-frame");
        d.send_bytes(&frames[split..]);
        assert!(d.input.is_empty());
        while d.held > 0 {
            d.deliver();
        }
        let end = at + third as u64;
        assert_eq!(
            d.received().last(),
            Some(&Message::Ack { durable_end: end })
        );
        drop(d);
        assert_eq!(rm.used(Resource::MemoryBytes), 0);
    }
}
