//! `syncfs(2)`: the whole file system of an open file flushed to stable storage in one call, with
//! one device cache flush, where `fdatasync` of each of N files costs N flushes. The log server's
//! writer thread uses it when one commit covers many files.
//!
//! A blocking call for a thread that may block (never a worker). Its error says that some write
//! back on the file system failed since this descriptor last looked (Linux 5.8 and later), not
//! which file's: a caller that needs to know asks each file with `fdatasync`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Flushes the file system `file` is on.
pub fn syncfs(file: &File) -> io::Result<()> {
    // SAFETY: `syncfs` takes a descriptor, which `file` keeps open for the call, and touches no
    // memory of ours.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_is_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        std::io::Write::write_all(&mut &f, b"bytes").unwrap();
        syncfs(&f).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"bytes");
    }
}
