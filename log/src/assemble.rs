//! Assembling one stream from several sources (servers, data directories), each holding some of
//! its offset ranges: every byte is written once, in order; where sources overlap their bytes
//! must be equal; the first offset no source holds is reported, with what was written before it.
//!
//! Pure over its inputs: sources are anything that yields `(offset, bytes)` pieces in increasing
//! offset order ([`PieceSource`]); the bytes go to any `Write`. Holds one piece per source at a
//! time (at most a record, 1 MiB).

use std::io::Write;

/// Something that holds some of a stream: yields its pieces in increasing offset order (pieces
/// do not overlap each other; holes between them are allowed).
pub trait PieceSource {
    /// The next piece, or `None` once there are no more. `Err` says why the source stopped.
    fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>, String>;
    /// How the source is named in messages (an address, a directory).
    fn name(&self) -> &str;
}

/// How an assembly ended well.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Assembled {
    /// The offset after the last byte written.
    pub end: u64,
    /// Sources that failed part way (their pieces before the failure were used).
    pub warnings: Vec<String>,
}

/// Why an assembly stopped short.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// No source holds `[from, to)`; everything before `from` was written.
    #[error("no source holds bytes {from} to {to} of the stream (everything before {from} was written); add the server or data directory that holds them")]
    Gap {
        from: u64,
        to: u64,
        warnings: Vec<String>,
    },
    /// Two sources hold different bytes at `offset`.
    #[error("{a} and {b} hold different bytes at offset {offset}; the stream was written differently to them (everything before {offset} was written)")]
    Mismatch { offset: u64, a: String, b: String },
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// One source and the piece it is at.
struct Cursor<'a> {
    source: &'a mut dyn PieceSource,
    piece: Option<(u64, Vec<u8>)>,
    done: bool,
}

impl Cursor<'_> {
    fn start(&self) -> Option<u64> {
        self.piece.as_ref().map(|p| p.0)
    }

    fn end(&self) -> Option<u64> {
        self.piece.as_ref().map(|p| p.0 + p.1.len() as u64)
    }

    /// Moves on until the piece ends after `pos` (or the source is done).
    fn reach(&mut self, pos: u64, warnings: &mut Vec<String>) {
        while !self.done && self.end().is_none_or(|e| e <= pos) {
            match self.source.next_piece() {
                Ok(Some(p)) if !p.1.is_empty() => self.piece = Some(p),
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.piece = None;
                    self.done = true;
                }
                Err(why) => {
                    warnings.push(format!("{}: {why}", self.source.name()));
                    self.piece = None;
                    self.done = true;
                }
            }
        }
    }

    fn slice(&self, from: u64, to: u64) -> &[u8] {
        let (start, bytes) = self.piece.as_ref().expect("a covering piece");
        &bytes[(from - start) as usize..(to - start) as usize]
    }
}

/// Writes the stream from `from` on to `out`, each byte once, from whichever sources hold it.
pub fn assemble(
    sources: &mut [Box<dyn PieceSource>],
    from: u64,
    out: &mut dyn Write,
) -> Result<Assembled, AssembleError> {
    let mut cursors: Vec<Cursor<'_>> = sources
        .iter_mut()
        .map(|s| Cursor {
            source: &mut **s,
            piece: None,
            done: false,
        })
        .collect();
    let mut warnings = Vec::new();
    let mut pos = from;
    loop {
        for c in cursors.iter_mut() {
            c.reach(pos, &mut warnings);
        }
        let covering: Vec<usize> = (0..cursors.len())
            .filter(|&i| cursors[i].start().is_some_and(|s| s <= pos))
            .collect();
        // The nearest piece that starts later: the stretch written now stops there, so where
        // it begins it is compared with the others too.
        let next_start = cursors
            .iter()
            .filter_map(|c| c.start().filter(|&s| s > pos))
            .min();
        let Some(&first) = covering.first() else {
            out.flush()?;
            return match next_start {
                None => Ok(Assembled { end: pos, warnings }),
                Some(to) => Err(AssembleError::Gap {
                    from: pos,
                    to,
                    warnings,
                }),
            };
        };
        let mut stop = covering
            .iter()
            .filter_map(|&i| cursors[i].end())
            .min()
            .unwrap_or(pos);
        if let Some(s) = next_start {
            stop = stop.min(s);
        }
        let bytes = cursors[first].slice(pos, stop);
        for &i in &covering[1..] {
            let other = cursors[i].slice(pos, stop);
            if let Some(k) = bytes.iter().zip(other).position(|(a, b)| a != b) {
                out.write_all(&bytes[..k])?;
                out.flush()?;
                return Err(AssembleError::Mismatch {
                    offset: pos + k as u64,
                    a: cursors[first].source.name().to_string(),
                    b: cursors[i].source.name().to_string(),
                });
            }
        }
        out.write_all(bytes)?;
        pos = stop;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pieces {
        name: String,
        pieces: std::vec::IntoIter<(u64, Vec<u8>)>,
        fail_after: Option<usize>,
    }

    impl PieceSource for Pieces {
        fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>, String> {
            if let Some(n) = &mut self.fail_after {
                if *n == 0 {
                    return Err("connection reset".into());
                }
                *n -= 1;
            }
            Ok(self.pieces.next())
        }
        fn name(&self) -> &str {
            &self.name
        }
    }

    fn byte(i: u64) -> u8 {
        (i * 13 % 256) as u8
    }

    /// A source holding `[a, b)` ranges in pieces of `step` bytes.
    fn source(name: &str, ranges: &[(u64, u64)], step: u64) -> Pieces {
        let mut pieces = Vec::new();
        for &(a, b) in ranges {
            let mut at = a;
            while at < b {
                let end = (at + step).min(b);
                pieces.push((at, (at..end).map(byte).collect()));
                at = end;
            }
        }
        Pieces {
            name: name.into(),
            pieces: pieces.into_iter(),
            fail_after: None,
        }
    }

    fn run(sources: [Pieces; 2], from: u64) -> (Vec<u8>, Result<Assembled, AssembleError>) {
        let mut out = Vec::new();
        let mut boxed: Vec<Box<dyn PieceSource>> = sources
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn PieceSource>)
            .collect();
        let r = assemble(&mut boxed, from, &mut out);
        (out, r)
    }

    #[test]
    fn halves_on_two_servers_with_an_overlap_make_the_stream_once() {
        let s = [
            source("a", &[(0, 600)], 70),
            source("b", &[(500, 1000)], 33),
        ];
        let (out, r) = run(s, 0);
        assert_eq!(r.unwrap().end, 1000);
        assert_eq!(out, (0..1000).map(byte).collect::<Vec<_>>());
    }

    #[test]
    fn the_first_hole_is_named_after_what_comes_before_it() {
        let s = [
            source("a", &[(0, 100), (300, 400)], 50),
            source("b", &[(350, 500)], 50),
        ];
        let (out, r) = run(s, 10);
        match r {
            Err(AssembleError::Gap {
                from: 100, to: 300, ..
            }) => {}
            r => panic!("{r:?}"),
        }
        assert_eq!(out, (10..100).map(byte).collect::<Vec<_>>());
        // A stream that starts later than asked: its start is a hole too.
        let s = [source("a", &[(50, 60)], 5), source("b", &[], 5)];
        assert!(matches!(
            run(s, 0).1,
            Err(AssembleError::Gap {
                from: 0,
                to: 50,
                ..
            })
        ));
    }

    #[test]
    fn sources_that_disagree_are_named() {
        let mut s = [source("a", &[(0, 100)], 100), source("b", &[(0, 100)], 30)];
        s[1].pieces = vec![(0, (0..40).map(byte).chain([0xff; 60]).collect())].into_iter();
        // byte(40) is 8, not 0xff.
        let (out, r) = run(s, 0);
        match r {
            Err(AssembleError::Mismatch { offset: 40, a, b }) => {
                assert_eq!((a, b), ("a".into(), "b".into()))
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(out.len(), 40);
    }

    #[test]
    fn a_source_that_fails_part_way_leaves_the_rest_to_the_others() {
        let mut a = source("a", &[(0, 1000)], 100);
        a.fail_after = Some(3);
        let s = [a, source("b", &[(200, 1000)], 250)];
        let (out, r) = run(s, 0);
        let done = r.unwrap();
        assert_eq!(done.end, 1000);
        assert_eq!(done.warnings, vec!["a: connection reset".to_string()]);
        assert_eq!(out, (0..1000).map(byte).collect::<Vec<_>>());
    }
}
