//! The verdict: each stream put together from every server's data directory (read in place with
//! `oasis_log`'s read-only store and assembly: each byte once, overlaps compared), then compared
//! with its source byte for byte, and, line by line, counted: bytes lost (source lines found
//! nowhere), duplicated (found more than once) and corrupt (held bytes that are no source line).
//! Holes no server fills and overlaps two servers disagree on are listed too; the assembly goes
//! on past each, so one fault does not hide the next.

use std::collections::HashMap;
use std::path::PathBuf;

use oasis_log::assemble::{assemble, AssembleError, PieceSource};
use oasis_log::client::DirSource;

use super::sources::{line, parse, Source};

/// Overlaps that disagree, at most, before the assembly gives up on a stream (what is left of
/// it counts as lost).
const MISMATCHES_MAX: usize = 20;
/// Holes, at most, before the assembly gives up on a stream.
const HOLES_MAX: usize = 1000;

/// What the servers hold of one stream against its source.
#[derive(Debug, Default)]
pub struct Verdict {
    pub stream: String,
    pub source_bytes: u64,
    pub held_bytes: u64,
    pub lost_bytes: u64,
    pub duplicated_bytes: u64,
    pub corrupt_bytes: u64,
    /// `[from, to)` ranges of the stream no server holds.
    pub holes: Vec<(u64, u64)>,
    /// Offsets where two servers hold different bytes.
    pub mismatches: Vec<u64>,
    /// Sources (data directories) that failed part way.
    pub warnings: Vec<String>,
    /// The first offset where what is held differs from the source (`None`: identical).
    pub first_difference: Option<u64>,
}

impl Verdict {
    /// Whether the stream came back byte for byte.
    pub fn clean(&self) -> bool {
        self.first_difference.is_none()
            && self.lost_bytes == 0
            && self.duplicated_bytes == 0
            && self.corrupt_bytes == 0
            && self.holes.is_empty()
            && self.mismatches.is_empty()
            && self.warnings.is_empty()
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{:<16} source {:>11} B, held {:>11} B: lost {} B, duplicated {} B, corrupt {} B",
            self.stream,
            self.source_bytes,
            self.held_bytes,
            self.lost_bytes,
            self.duplicated_bytes,
            self.corrupt_bytes
        );
        if let Some(at) = self.first_difference {
            s += &format!("; first difference at offset {at}");
        }
        if !self.holes.is_empty() {
            let first: Vec<_> = self.holes.iter().take(5).collect();
            s += &format!("; {} holes, the first {first:?}", self.holes.len());
        }
        if !self.mismatches.is_empty() {
            s += &format!("; servers disagree at {:?}", self.mismatches);
        }
        for w in &self.warnings {
            s += &format!("; {w}");
        }
        s
    }
}

/// The stream `stream` from every data directory in `dirs`, with its holes, disagreements and
/// failed sources.
fn assemble_dirs(dirs: &[PathBuf], stream: &str, v: &mut Verdict) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let mut sources: Vec<Box<dyn PieceSource>> = Vec::new();
        for d in dirs {
            match DirSource::open(d, stream, from) {
                Ok(Some(s)) => sources.push(Box::new(s)),
                Ok(None) => {}
                Err(e) => v.warnings.push(format!("{}: {e}", d.display())),
            }
        }
        if sources.is_empty() {
            return out;
        }
        match assemble(&mut sources, from, &mut out) {
            Ok(done) => {
                v.warnings.extend(done.warnings);
                return out;
            }
            Err(AssembleError::Gap { from: f, to, .. }) => {
                v.holes.push((f, to));
                if v.holes.len() >= HOLES_MAX {
                    return out;
                }
                from = to;
            }
            Err(AssembleError::Mismatch { offset, .. }) => {
                v.mismatches.push(offset);
                if v.mismatches.len() >= MISMATCHES_MAX {
                    return out;
                }
                from = offset + 1;
            }
            Err(AssembleError::Output(e)) => panic!("assembling in memory: {e}"),
        }
    }
}

/// The source's bytes: its files, in order.
fn source_bytes(src: &Source) -> Vec<u8> {
    let mut all = Vec::with_capacity(src.bytes as usize);
    for f in &src.files {
        all.extend(std::fs::read(f).expect("read a source file"));
    }
    all
}

/// Splits into lines, each with its `\n` (the last may lack it).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split_inclusive(|&b| b == b'\n')
}

/// Counts lost, duplicated and corrupt bytes of `held` against `source` (lines of `tag`).
fn count(seed: u64, tag: &str, source: &[u8], held: &[u8], v: &mut Verdict) {
    // Every source line by its sequence number, with its length and how often it is held.
    let mut want: HashMap<u64, (u64, u32)> = HashMap::new();
    for l in lines(source) {
        match parse(l.strip_suffix(b"\n").unwrap_or(l)) {
            Some((t, seq)) if t == tag => {
                want.insert(seq, (l.len() as u64, 0));
            }
            _ => panic!("the checker's own source holds a line that is not its: {l:?}"),
        }
    }
    for l in lines(held) {
        let found = parse(l.strip_suffix(b"\n").unwrap_or(l))
            .filter(|&(t, seq)| t == tag && line(seed, tag, seq) == l)
            .and_then(|(_, seq)| want.get_mut(&seq));
        match found {
            Some((_, seen)) => *seen += 1,
            None => v.corrupt_bytes += l.len() as u64,
        }
    }
    for (len, seen) in want.values() {
        match seen {
            0 => v.lost_bytes += len,
            n => v.duplicated_bytes += u64::from(n - 1) * len,
        }
    }
}

/// The verdict on one stream.
pub fn verify(seed: u64, dirs: &[PathBuf], stream: &str, src: &Source) -> Verdict {
    let mut v = Verdict {
        stream: stream.to_string(),
        ..Verdict::default()
    };
    let held = assemble_dirs(dirs, stream, &mut v);
    let source = source_bytes(src);
    v.source_bytes = source.len() as u64;
    v.held_bytes = held.len() as u64;
    if held != source {
        let common = held.iter().zip(&source).take_while(|(a, b)| a == b).count();
        v.first_difference = Some(common as u64);
    }
    count(seed, &src.tag, &source, &held, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(seqs: &[u64]) -> Vec<u8> {
        seqs.iter().flat_map(|&s| line(3, "t", s)).collect()
    }

    #[test]
    fn lost_duplicated_and_corrupt_bytes_are_counted_apart() {
        let source = lines_of(&[0, 1, 2, 3]);
        let len = |s| line(3, "t", s).len() as u64;
        let mut v = Verdict::default();
        let mut held = lines_of(&[0, 1, 1, 3]);
        held.extend_from_slice(b"garbage\n");
        count(3, "t", &source, &held, &mut v);
        assert_eq!(v.lost_bytes, len(2));
        assert_eq!(v.duplicated_bytes, len(1));
        assert_eq!(v.corrupt_bytes, 8);
        let mut clean = Verdict::default();
        count(3, "t", &source, &source, &mut clean);
        assert_eq!((clean.lost_bytes, clean.duplicated_bytes), (0, 0));
        assert_eq!(clean.corrupt_bytes, 0);
    }
}
