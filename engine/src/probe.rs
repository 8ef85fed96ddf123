//! Start-up probe: can this process use io_uring, and which of its features does the kernel have?
//!
//! `oasis serve` calls [`probe`] before starting anything. A kernel without io_uring, the
//! `kernel.io_uring_disabled` sysctl, a seccomp filter or a too-low `RLIMIT_MEMLOCK` each give one
//! sentence naming the cause and the fix ([`ProbeError`]), so the server never starts half-way.
//! Optional features (multishot accept, SEND_ZC, splice, DEFER_TASKRUN) are recorded in
//! [`Features`] and the engine falls back when one is missing.

use io_uring::{opcode, IoUring, Probe};

/// What the kernel offers. Every field is optional for the engine except what [`probe`] requires.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    pub kernel_release: String,
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN (6.1+).
    pub defer_taskrun: bool,
    /// Multishot accept (5.19+).
    pub multishot_accept: bool,
    pub send_zc: bool,
    pub splice: bool,
    pub read_fixed: bool,
    pub msg_ring: bool,
}

/// Why io_uring cannot be used. The message is one sentence for the operator: cause and fix.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("io_uring is disabled by the kernel.io_uring_disabled sysctl (value {0}); set it to 0 (`sysctl -w kernel.io_uring_disabled=0`) to run Oasis")]
    DisabledBySysctl(u32),
    #[error("io_uring_setup does not exist here (ENOSYS): the kernel {0} was built without io_uring or a seccomp filter hides it; run Oasis on Linux 5.19 or newer with CONFIG_IO_URING=y and allow the io_uring_setup/io_uring_enter/io_uring_register syscalls")]
    NoIoUring(String),
    #[error("io_uring_setup was refused (EPERM), most likely by a seccomp filter or container policy; allow the io_uring_setup/io_uring_enter/io_uring_register syscalls (e.g. a docker --security-opt seccomp=PROFILE that permits them) to run Oasis")]
    Forbidden,
    #[error("io_uring could not allocate its rings (ENOMEM): RLIMIT_MEMLOCK is {0} KiB; raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity in systemd) to run Oasis")]
    MemlockTooLow(u64),
    #[error("the kernel {release} lacks io_uring operation {op}; Oasis needs Linux 5.19 or newer")]
    MissingOp { release: String, op: &'static str },
    #[error("io_uring probe failed: {0}")]
    Other(std::io::Error),
}

/// The current `RLIMIT_MEMLOCK` soft limit in KiB (`u64::MAX` when unlimited).
pub fn memlock_kib() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        lim.rlim_cur / 1024
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty());
    let maj: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let min: u32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (maj, min) >= (major, minor)
}

/// Checks that io_uring works here and reports its features.
pub fn probe() -> Result<Features, ProbeError> {
    let release = kernel_release();
    if let Ok(v) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        let v: u32 = v.trim().parse().unwrap_or(0);
        // 1 means "only for members of kernel.io_uring_group"; root (CAP_SYS_ADMIN) still may.
        // SAFETY: geteuid has no preconditions.
        if v == 2 || (v == 1 && unsafe { libc::geteuid() } != 0) {
            return Err(ProbeError::DisabledBySysctl(v));
        }
    }
    let ring = match IoUring::new(8) {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.raw_os_error() {
                Some(libc::ENOSYS) => ProbeError::NoIoUring(release),
                Some(libc::EPERM) | Some(libc::EACCES) => ProbeError::Forbidden,
                Some(libc::ENOMEM) => ProbeError::MemlockTooLow(memlock_kib()),
                _ => ProbeError::Other(e),
            })
        }
    };
    let mut p = Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(ProbeError::Other)?;
    let required: [(u8, &'static str); 7] = [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::Read::CODE, "READ"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::Close::CODE, "CLOSE"),
        (opcode::Timeout::CODE, "TIMEOUT"),
    ];
    for (code, op) in required {
        if !p.is_supported(code) {
            return Err(ProbeError::MissingOp { release, op });
        }
    }
    let defer_taskrun = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .build(8)
        .is_ok();
    Ok(Features {
        defer_taskrun,
        multishot_accept: kernel_at_least(&release, 5, 19),
        send_zc: p.is_supported(opcode::SendZc::CODE),
        splice: p.is_supported(opcode::Splice::CODE),
        read_fixed: p.is_supported(opcode::ReadFixed::CODE),
        msg_ring: p.is_supported(opcode::MsgRingData::CODE),
        kernel_release: release,
    })
}

/// Builds a worker ring with the best setup flags the kernel has; must be called on the thread
/// that will submit to it (SINGLE_ISSUER).
pub fn build_ring(entries: u32, features: &Features) -> std::io::Result<IoUring> {
    if features.defer_taskrun {
        let mut b = IoUring::builder();
        b.setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_cqsize(entries * 4);
        if let Ok(r) = b.build(entries) {
            return Ok(r);
        }
    }
    IoUring::builder().setup_cqsize(entries * 4).build(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(kernel_at_least("6.18.44-fc-v669", 5, 19));
        assert!(kernel_at_least("5.19.0", 5, 19));
        assert!(!kernel_at_least("5.15.0-91-generic", 5, 19));
        assert!(!kernel_at_least("", 5, 19));
    }

    #[test]
    fn probe_here() {
        // The machines Oasis is developed and tested on have io_uring; this checks the probe agrees.
        let f = probe().expect("io_uring usable on the test machine");
        assert!(!f.kernel_release.is_empty());
    }
}
