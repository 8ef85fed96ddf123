//! The follower's decisions as pure functions, then the thread on real files in a temporary
//! directory: appends, a rename rotation, a truncation and a restart from the state file, each
//! checked by the bytes the window receives (acknowledged as they arrive, as a server would).

use super::*;
use std::io::Write;

const A: FileId = FileId { dev: 1, ino: 10 };
const B: FileId = FileId { dev: 1, ino: 11 };

fn state(file: FileId, acked: u64, pos: u64) -> ShipState {
    ShipState {
        stream: "s".into(),
        acked,
        file,
        pos,
    }
}

#[test]
fn a_look_at_the_path_decides() {
    // Nothing new, the file grew, or the path is momentarily empty (mid-rotation): wait.
    assert_eq!(decide(A, 100, 100, Some(A)), Step::Wait);
    assert_eq!(decide(A, 100, 150, Some(A)), Step::Wait);
    assert_eq!(decide(A, 100, 100, None), Step::Wait);
    // Another file at the path: rotated by rename.
    assert_eq!(decide(A, 100, 100, Some(B)), Step::Rotated);
    // Shorter than what was read: truncated, whatever is at the path.
    assert_eq!(decide(A, 100, 0, Some(A)), Step::Truncated);
    assert_eq!(decide(A, 100, 40, None), Step::Truncated);
    assert_eq!(decide(A, 100, 40, Some(B)), Step::Truncated);
}

#[test]
fn the_start_follows_the_state() {
    let at = |id, size| Some(Seen { id, size });
    // No state: the file from its start, or wait for one.
    assert_eq!(plan_start(None, at(A, 5), None), (Start::Path(0), None));
    assert_eq!(plan_start(None, None, None), (Start::Wait, None));
    // The same file, at least as long: resume at the position.
    let s = state(A, 1000, 70);
    assert_eq!(
        plan_start(Some(&s), at(A, 70), None),
        (Start::Path(70), None)
    );
    assert_eq!(
        plan_start(Some(&s), at(A, 90), None),
        (Start::Path(70), None)
    );
    // Shorter: truncated while stopped, from its start, said.
    let (start, note) = plan_start(Some(&s), at(A, 10), None);
    assert_eq!(start, Start::Path(0));
    assert!(note.unwrap().contains("shrank to 10 bytes"));
    // Rotated while stopped: the old file (found beside it) first.
    assert_eq!(
        plan_start(Some(&s), at(B, 3), at(A, 80)),
        (Start::Rotated(70), None)
    );
    assert_eq!(
        plan_start(Some(&s), None, at(A, 70)),
        (Start::Rotated(70), None)
    );
    // The old file is gone: the new one from its start, and the possible loss said.
    let (start, note) = plan_start(Some(&s), at(B, 3), None);
    assert_eq!(start, Start::Path(0));
    assert!(note.unwrap().contains("inode 10"));
    let (start, note) = plan_start(Some(&s), None, None);
    assert_eq!(start, Start::Wait);
    assert!(note.is_some());
}

#[test]
fn marks_map_stream_offsets_to_file_positions() {
    let mut m = Marks::default();
    assert_eq!(m.locate(0), None);
    m.push(1000, A, 70); // resumed at A:70
    m.push(1030, B, 0); // A ended at 100, B from its start
    m.push(1050, B, 0); // B truncated after 20 bytes
    assert_eq!(m.locate(1000), Some((A, 70)));
    assert_eq!(m.locate(1029), Some((A, 99)));
    assert_eq!(
        m.locate(1030),
        Some((B, 0)),
        "a boundary is the next file's start"
    );
    assert_eq!(m.locate(1049), Some((B, 19)));
    assert_eq!(m.locate(1060), Some((B, 10)));
    m.trim(1040);
    assert_eq!(m.len(), 2);
    assert_eq!(m.locate(1040), Some((B, 10)));
    m.trim(5000);
    assert_eq!(m.len(), 1, "the last mark always stays");
    assert_eq!(m.locate(5000), Some((B, 3950)));
}

/// A follower thread on `path` and a consumer that acknowledges every byte it takes.
struct Rig {
    window: Arc<Window>,
    keeper: Arc<StateKeeper>,
    thread: Option<std::thread::JoinHandle<()>>,
    got: Vec<u8>,
    state_path: PathBuf,
}

impl Rig {
    fn start(path: &Path) -> Rig {
        let state_path = path.with_extension("state");
        let state = ShipState::load(&state_path).unwrap();
        let base = state.as_ref().map_or(0, |s| s.acked);
        let window = Arc::new(Window::new(base, 64, true));
        let keeper = Arc::new(StateKeeper::new(state_path.clone(), "s".into()));
        let follower = Follower::new(
            path.to_path_buf(),
            state.as_ref(),
            Arc::clone(&window),
            Arc::clone(&keeper),
            Duration::from_millis(5),
        );
        Rig {
            window,
            keeper,
            thread: Some(follower.spawn().unwrap()),
            got: Vec::new(),
            state_path,
        }
    }

    /// Takes (and acknowledges) bytes until `want` bytes came in all.
    fn take_until(&mut self, want: usize) {
        let mut buf = Vec::new();
        while self.got.len() < want {
            let s = self.window.snapshot();
            let n = self.window.copy_from(s.acked, 1 << 20, &mut buf);
            if n > 0 {
                self.got.extend_from_slice(&buf);
                self.window.ack(s.acked + n as u64);
            } else {
                self.window
                    .wait_change(s.generation, Duration::from_millis(50));
            }
        }
        assert_eq!(self.got.len(), want, "no more bytes than written");
    }

    fn stop(mut self) -> Vec<u8> {
        self.window.close();
        self.thread.take().unwrap().join().unwrap();
        self.keeper.persist(self.window.snapshot(), true).unwrap();
        std::mem::take(&mut self.got)
    }
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// Distinct bytes, so any loss, repeat or reordering shows.
fn text(tag: &str, lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("{tag} line {i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn follows_appends_rotation_and_truncation_on_real_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let first = text("first", 30);
    let second = text("second", 20);
    let third = text("third", 10);
    append(&path, &first[..100]);
    let mut rig = Rig::start(&path);
    rig.take_until(100);
    append(&path, &first[100..]);
    rig.take_until(first.len());
    // Rotation by rename: the old file gets more bytes after the rename (a writer that has not
    // reopened yet), and a new file appears. Both arrive, the old one's first.
    std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    append(&dir.path().join("app.log.1"), b"late line\n");
    append(&path, &second);
    rig.take_until(first.len() + 10 + second.len());
    // Truncation: the new file is cut to nothing and written again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    // Written again shorter than before, so the follower sees the cut whenever it looks.
    assert!(third.len() < second.len());
    let before = rig.window.snapshot().read_end;
    append(&path, &third);
    rig.take_until(first.len() + 10 + second.len() + third.len());
    let got = rig.stop();
    let mut want = first.clone();
    want.extend_from_slice(b"late line\n");
    want.extend_from_slice(&second);
    want.extend_from_slice(&third);
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(before as usize, want.len() - third.len());
}

#[test]
fn a_restart_resumes_at_the_acknowledged_offset_even_after_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let first = text("first", 40);
    append(&path, &first);
    let mut rig = Rig::start(&path);
    rig.take_until(first.len());
    let state_path = rig.state_path.clone();
    rig.stop();
    let s = ShipState::load(&state_path).unwrap().unwrap();
    assert_eq!((s.acked, s.pos), (first.len() as u64, first.len() as u64));
    // While no shipper runs: more lines, a rotation, a new file.
    append(&path, b"while stopped\n");
    std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    append(&path, b"new file\n");
    let mut rig = Rig::start(&path);
    rig.take_until(14 + 9);
    assert_eq!(rig.stop(), b"while stopped\nnew file\n");
    let s = ShipState::load(&state_path).unwrap().unwrap();
    assert_eq!(s.acked, first.len() as u64 + 23, "stream offsets go on");
    assert_eq!(s.pos, 9, "in the new file");
}
