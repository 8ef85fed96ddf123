//! The state file of a shipper that follows a file: which stream offset is acknowledged and where
//! that offset is in which file, so a shipper killed and started again resumes exactly there.
//!
//! The file is a few lines of text (an operator can read it):
//!
//! ```text
//! oasis-ship-state 1
//! stream web-1/access
//! acked 1048576
//! dev 2049
//! ino 1835012
//! pos 65536
//! ```
//!
//! `acked` is the stream offset below which some server holds every byte; `dev`/`ino` name the
//! file that offset lies in and `pos` is its place there. It is replaced atomically: written to
//! a temporary file beside it, fsynced, renamed over the old one, and the directory fsynced, so a
//! crash leaves the old state or the new one. A state that lags the servers is safe (the servers
//! say what they hold and the bytes are skipped); one ahead of them would lose bytes, and cannot
//! happen: it is written only from acknowledged offsets. Nothing here follows or reads the log.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The first line of every state file.
const MAGIC: &str = "oasis-ship-state 1";
/// A state file is a few lines; anything longer is not one.
const STATE_BYTES_MAX: u64 = 4096;

/// A file's identity: its device and inode numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl FileId {
    /// The identity of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What a state file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipState {
    /// The stream the offsets belong to.
    pub stream: String,
    /// Every byte below this stream offset is durable on some server.
    pub acked: u64,
    /// The file stream offset `acked` lies in.
    pub file: FileId,
    /// `acked`'s position in that file.
    pub pos: u64,
}

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a state file this version wrote.
    #[error("state file {path} is not a shipper state file ({why}); move it away or pass another --state-file")]
    Malformed {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl ShipState {
    /// The file's text.
    pub fn to_text(&self) -> String {
        format!(
            "{MAGIC}\nstream {}\nacked {}\ndev {}\nino {}\npos {}\n",
            self.stream, self.acked, self.file.dev, self.file.ino, self.pos
        )
    }

    /// Parses a state file's text; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<ShipState, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("the first line is not {MAGIC:?}"));
        }
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines.next().ok_or_else(|| format!("no {name} line"))?;
            match line.split_once(' ') {
                Some((key, value)) if key == name => Ok(value.to_string()),
                _ => Err(format!("expected a {name} line, found {line:?}")),
            }
        };
        let number = |name: &str, value: String| -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{name} {value:?} is not a number"))
        };
        let stream = field("stream")?;
        let acked = number("acked", field("acked")?)?;
        let dev = number("dev", field("dev")?)?;
        let ino = number("ino", field("ino")?)?;
        let pos = number("pos", field("pos")?)?;
        Ok(ShipState {
            stream,
            acked,
            file: FileId { dev, ino },
            pos,
        })
    }

    /// Reads the state file at `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<ShipState>, StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = match std::fs::File::open(path) {
            Ok(f) => {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut std::io::Read::take(f, STATE_BYTES_MAX),
                    &mut text,
                )
                .map_err(io)?;
                text
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        ShipState::parse(&text)
            .map(Some)
            .map_err(|why| StateError::Malformed {
                path: path.to_path_buf(),
                why,
            })
    }

    /// Replaces the state file at `path` atomically and durably (temporary file, fsync, rename,
    /// directory fsync).
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(self.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io)?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ShipState {
        ShipState {
            stream: "web-1/access".into(),
            acked: 1 << 40,
            file: FileId {
                dev: 2049,
                ino: u64::MAX,
            },
            pos: 65536,
        }
    }

    #[test]
    fn round_trip_through_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log.oasis-ship");
        assert_eq!(ShipState::load(&path).unwrap(), None, "no file: no state");
        let s = sample();
        s.store(&path).unwrap();
        assert_eq!(ShipState::load(&path).unwrap(), Some(s.clone()));
        // Replaced, not appended; no temporary file left behind.
        let mut t = s.clone();
        t.acked += 1;
        t.pos = 0;
        t.store(&path).unwrap();
        assert_eq!(ShipState::load(&path).unwrap(), Some(t));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["app.log.oasis-ship"]);
    }

    #[test]
    fn text_is_readable_and_exact() {
        assert_eq!(
            sample().to_text(),
            format!(
                "oasis-ship-state 1\nstream web-1/access\nacked 1099511627776\ndev 2049\nino {}\npos 65536\n",
                u64::MAX
            )
        );
    }

    #[test]
    fn a_foreign_or_damaged_file_is_refused_with_the_reason() {
        for (text, why) in [
            ("", "first line"),
            ("hello\n", "first line"),
            (
                "oasis-ship-state 1\nstream a\nacked x\n",
                "acked \"x\" is not a number",
            ),
            (
                "oasis-ship-state 1\nstream a\nacked 1\ndev 2\n",
                "no ino line",
            ),
            (
                "oasis-ship-state 1\nstream a\nacked 1\npos 2\n",
                "expected a dev line",
            ),
        ] {
            let err = ShipState::parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "not a state file").unwrap();
        let err = ShipState::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not a shipper state file"), "{err}");
        assert!(err.contains("--state-file"), "says what to do: {err}");
    }
}
