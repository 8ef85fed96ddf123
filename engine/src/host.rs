//! Host set-up before any thread starts: the open-files limit, the descriptor table, SIGPIPE;
//! and one set-up for child processes (`oasis agent`'s): dying with their parent.
//!
//! These are process-wide settings with `unsafe` calls into libc, kept here so the binary holds no
//! `unsafe` of its own. Nothing here runs after the engine has started.

/// This process's RLIMIT_NOFILE (soft, hard), if it can be read.
pub fn nofile_limit() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0)
        .then_some((lim.rlim_cur, lim.rlim_max))
}

/// Raises RLIMIT_NOFILE toward `want`: the soft limit up to the hard one, and the hard one too
/// when the process may (CAP_SYS_RESOURCE). Returns the soft limit now in force.
pub fn raise_nofile_limit(want: u64) -> Option<u64> {
    let (soft, hard) = nofile_limit()?;
    if hard < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: `raised` is a valid rlimit; a refusal (unprivileged) leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Some(want);
        }
    }
    let target = want.min(hard);
    if soft < target {
        let lim = libc::rlimit {
            rlim_cur: target,
            rlim_max: hard,
        };
        // SAFETY: as above; the soft limit stays within the hard limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    nofile_limit().map(|(soft, _)| soft)
}

/// Grows the process's descriptor table to `want` entries (at most the open-files limit and
/// 2^20) now, so it never grows on the data path.
///
/// The kernel grows a shared table (io_uring's threads share it) by doubling, and the thread that
/// grows it waits in `synchronize_rcu` for milliseconds. About 8 bytes of kernel memory per entry.
pub fn presize_fd_table(want: u64) -> std::io::Result<()> {
    let Some((soft, _)) = nofile_limit() else {
        return Ok(());
    };
    let top = want.min(soft).min(1 << 20);
    if top < 2 {
        return Ok(());
    }
    // Any descriptor of our own will do as the one to duplicate (stdin may be closed).
    let probe = std::fs::File::open("/dev/null")?;
    // SAFETY: duplicating our own open descriptor (or failing) has no memory effects.
    let fd = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&probe),
            libc::F_DUPFD_CLOEXEC,
            (top - 1) as libc::c_int,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created here and nothing else knows it.
    unsafe { libc::close(fd) };
    Ok(())
}

/// A client that vanishes must not kill the server: sends use MSG_NOSIGNAL, this is the backstop.
pub fn ignore_sigpipe() {
    // SAFETY: setting SIGPIPE to SIG_IGN has no preconditions; called before threads start.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// Makes a child started from `cmd` receive SIGKILL when the thread that spawns it exits, so a
/// supervisor that dies (even by `kill -9`) leaves no orphan behind holding its ports and data
/// directory. The spawning thread must live as long as the child should: Linux sends the signal
/// when that *thread* ends, not the process. A parent gone before the child could ask fails the
/// spawn (ESRCH) rather than leave an orphan.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec. It calls only `prctl` and
    // `getppid`, both async-signal-safe, and builds `io::Error`s from raw codes, which does not
    // allocate; it takes no lock and touches no state shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_never_goes_down() {
        let (soft, _) = nofile_limit().expect("getrlimit works");
        let now = raise_nofile_limit(16).expect("getrlimit works");
        assert!(now >= soft.min(16), "{now} < {soft}");
        presize_fd_table(64).expect("a table of 64 fits any limit");
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt;
        let spawner = std::thread::spawn(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("600");
            die_with_parent(&mut cmd);
            cmd.spawn().expect("sleep starts")
        });
        // The spawning thread has ended: the child gets SIGKILL from the kernel.
        let mut child = spawner.join().expect("spawner thread");
        let status = child.wait().expect("the child is ours to wait for");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}
