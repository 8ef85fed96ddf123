//! The fault schedule: drawn from a seed, one fault started every few hundred milliseconds, each
//! undone after a drawn pause: `kill -9` a server and restart it; SIGSTOP then SIGCONT a server;
//! cut every connection to a server at the proxy; stall them (one way or both) and let go, or
//! cut; `kill -9` a shipper and restart it; fill the small server's tmpfs and free it. At most
//! two servers are down, paused or stalled at once, so the shippers always have somewhere to
//! go. The rotated file is rotated now and then. Every fault is printed with its time, so a
//! failure can be read against the servers' and shippers' logs.
//!
//! The seed fixes the faults, their targets and pauses; the processes' timing around them is the
//! machine's.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::procs::{Logd, Shipper};
use super::proxy::{Direction, Proxy};
use super::sources::Writer;

/// A tmpfs holding one server's data directory, and the file that fills it.
pub struct Fill {
    /// The server whose data directory it holds.
    pub server: usize,
    /// Its mount point.
    pub mount: PathBuf,
}

/// Everything the faults act on.
pub struct World {
    pub servers: Vec<Logd>,
    pub proxies: Vec<Proxy>,
    pub shippers: Vec<Shipper>,
    /// Shippers that may be killed (followers with state files); the first is killed most.
    pub killable: Vec<usize>,
    pub fill: Option<Fill>,
}

impl World {
    /// Starts server `i` and points its proxy at it.
    pub fn start_server(&mut self, i: usize) {
        let addr = self.servers[i].start();
        self.proxies[i].set_backend(Some(addr));
    }

    fn filler(&self) -> Option<PathBuf> {
        self.fill.as_ref().map(|f| f.mount.join("filler"))
    }
}

/// What undoes a fault.
#[derive(Debug)]
enum Undo {
    Restart(usize),
    Resume(usize),
    Unstall(usize, Direction, bool),
    Unfill,
    RestartShipper(usize),
}

/// The schedule and what it has done.
pub struct Chaos {
    rng: fastrand::Rng,
    began: Instant,
    pending: Vec<(Instant, Undo)>,
    impaired: Vec<bool>,
    filled: bool,
    /// Faults started, by kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// Mean time between two faults.
    interval: Duration,
}

fn ms(rng: &mut fastrand::Rng, from: u64, to: u64) -> Duration {
    Duration::from_millis(rng.u64(from..=to))
}

/// `(used, size)` of the file system at `mount`, in bytes.
fn usage(mount: &PathBuf) -> (u64, u64) {
    let out = Command::new("df")
        .args(["--output=used,size", "-B1"])
        .arg(mount)
        .output()
        .expect("run df");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut nums = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok());
    (nums.next().unwrap_or(0), nums.next().unwrap_or(u64::MAX))
}

impl Chaos {
    /// A schedule drawn from `seed` for `servers` servers, a fault every `interval` on average.
    pub fn new(seed: u64, servers: usize, interval: Duration) -> Chaos {
        Chaos {
            rng: fastrand::Rng::with_seed(seed),
            began: Instant::now(),
            pending: Vec::new(),
            impaired: vec![false; servers],
            filled: false,
            counts: BTreeMap::new(),
            interval,
        }
    }

    fn say(&self, what: &str) {
        eprintln!("[{:8.3} s] {what}", self.began.elapsed().as_secs_f64());
    }

    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }

    /// Starts `faults` faults, undoing each when its time comes; rotates `rotating` now and then.
    pub fn run(&mut self, w: &mut World, faults: u64, rotating: &Writer) {
        for n in 1..=faults {
            let gap = self.interval.as_millis() as u64;
            let next = Instant::now() + ms(&mut self.rng, gap / 4, gap * 7 / 4);
            while Instant::now() < next {
                self.undo_due(w, Instant::now());
                std::thread::sleep(Duration::from_millis(10));
            }
            self.grow_if_full(w);
            if self.rng.u32(0..20) == 0 {
                self.say("rotation asked for");
                rotating.rotate();
            }
            self.start_one(w, n);
        }
    }

    /// Undoes every fault still in force, now.
    pub fn calm(&mut self, w: &mut World) {
        let far = Instant::now() + Duration::from_secs(86_400);
        self.undo_due(w, far);
        self.grow_if_full(w);
    }

    fn undo_due(&mut self, w: &mut World, now: Instant) {
        while let Some(i) = self.pending.iter().position(|(at, _)| *at <= now) {
            let (_, undo) = self.pending.swap_remove(i);
            self.undo(w, undo);
        }
    }

    fn later(&mut self, after: Duration, undo: Undo) {
        self.pending.push((Instant::now() + after, undo));
    }

    fn undo(&mut self, w: &mut World, undo: Undo) {
        match undo {
            Undo::Restart(i) => {
                w.start_server(i);
                self.impaired[i] = false;
                self.say(&format!("{} restarted", w.servers[i].name));
            }
            Undo::Resume(i) => {
                w.servers[i].pause(false);
                self.impaired[i] = false;
                self.say(&format!("{} SIGCONT", w.servers[i].name));
            }
            Undo::Unstall(i, dir, cut) => {
                if cut {
                    w.proxies[i].cut_all();
                }
                w.proxies[i].stall(dir, false);
                self.impaired[i] = false;
                let how = if cut { "cut" } else { "let go" };
                self.say(&format!("{} stall ends ({how})", w.servers[i].name));
            }
            Undo::Unfill => {
                if let Some(f) = w.filler() {
                    let _ = std::fs::remove_file(f);
                }
                self.filled = false;
                self.say("disk space freed");
            }
            Undo::RestartShipper(j) => {
                w.shippers[j].start();
                self.say(&format!("shipper {} restarted", w.shippers[j].name));
            }
        }
    }

    /// A server that no fault holds now, if fewer than two are held.
    fn free_server(&mut self) -> Option<usize> {
        let held = self.impaired.iter().filter(|&&h| h).count();
        if held >= 2 {
            return None;
        }
        let free: Vec<usize> = (0..self.impaired.len())
            .filter(|&i| !self.impaired[i])
            .collect();
        Some(free[self.rng.usize(0..free.len())])
    }

    fn start_one(&mut self, w: &mut World, n: u64) {
        let roll = self.rng.u32(0..100);
        let server = self.free_server();
        match (roll, server) {
            (0..=19, Some(i)) => {
                w.proxies[i].set_backend(None);
                w.servers[i].kill9();
                let pause = ms(&mut self.rng, 100, 2500);
                let what = format!("#{n} kill -9 {}", w.servers[i].name);
                self.hold(i, pause, Undo::Restart(i), "kill -9 logd", &what);
            }
            (20..=34, Some(i)) => {
                w.servers[i].pause(true);
                let pause = ms(&mut self.rng, 100, 4000);
                let what = format!("#{n} SIGSTOP {}", w.servers[i].name);
                self.hold(i, pause, Undo::Resume(i), "SIGSTOP logd", &what);
            }
            (35..=49, Some(i)) => {
                let dir = [Direction::Both, Direction::ToServer, Direction::ToShipper]
                    [self.rng.usize(0..3)];
                let cut = self.rng.bool();
                w.proxies[i].stall(dir, true);
                let pause = ms(&mut self.rng, 200, 4000);
                let what = format!("#{n} stall {dir:?} at {}'s proxy", w.servers[i].name);
                self.hold(i, pause, Undo::Unstall(i, dir, cut), "stall", &what);
            }
            (50..=59, _) if w.fill.is_some() && !self.filled => self.fill(w, n),
            (60..=79, _) if !w.killable.is_empty() => self.kill_shipper(w, n),
            _ => self.cut(w, n),
        }
    }

    /// Marks server `i` held by a fault (`kind`, said as `what`) that `undo` ends after `pause`.
    fn hold(&mut self, i: usize, pause: Duration, undo: Undo, kind: &'static str, what: &str) {
        self.impaired[i] = true;
        self.later(pause, undo);
        self.count(kind);
        self.say(&format!("{what} for {pause:?}"));
    }

    fn kill_shipper(&mut self, w: &mut World, n: u64) {
        let down: Vec<usize> = self
            .pending
            .iter()
            .filter_map(|(_, u)| match u {
                Undo::RestartShipper(j) => Some(*j),
                _ => None,
            })
            .collect();
        let k = &w.killable;
        let j = if self.rng.u32(0..10) < 7 {
            k[0]
        } else {
            k[self.rng.usize(0..k.len())]
        };
        if down.contains(&j) {
            return self.cut(w, n);
        }
        let pause = ms(&mut self.rng, 0, 1000);
        w.shippers[j].kill9();
        self.later(pause, Undo::RestartShipper(j));
        self.count("kill -9 shipper");
        self.say(&format!(
            "#{n} kill -9 shipper {} for {pause:?}",
            w.shippers[j].name
        ));
    }

    fn cut(&mut self, w: &mut World, n: u64) {
        let i = self.rng.usize(0..w.proxies.len());
        w.proxies[i].cut_all();
        self.count("cut connections");
        self.say(&format!(
            "#{n} cut every connection to {}",
            w.servers[i].name
        ));
    }

    /// Fills the small server's file system to the last byte, for a while.
    fn fill(&mut self, w: &mut World, n: u64) {
        let Some(path) = w.filler() else { return };
        let mut f = File::create(&path).expect("create the filler");
        let block = vec![0u8; 1 << 20];
        let mut filled = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) | Err(_) => break,
                Ok(k) => filled += k as u64,
            }
        }
        let pause = ms(&mut self.rng, 500, 4000);
        self.filled = true;
        self.later(pause, Undo::Unfill);
        self.count("disk full");
        let name = &w.servers[w.fill.as_ref().map_or(0, |f| f.server)].name;
        self.say(&format!(
            "#{n} {name}'s disk filled ({filled} bytes more) for {pause:?}"
        ));
    }

    /// Gives the small server's tmpfs more room once its data passes three quarters of it (an
    /// operator adding space), so a long run keeps that server in play.
    fn grow_if_full(&mut self, w: &mut World) {
        let Some(f) = &w.fill else { return };
        if self.filled {
            return;
        }
        let (used, size) = usage(&f.mount);
        if used * 4 < size * 3 {
            return;
        }
        let new = size + (32 << 20);
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={new}")])
            .arg(&f.mount)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remounting the tmpfs larger failed");
        self.say(&format!("tmpfs grown to {new} bytes ({used} used)"));
    }
}
