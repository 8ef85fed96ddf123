//! `oasis`: the thin binary. Parse the command line and the configuration, build the modules
//! (Resource Manager, Media Object Manager, Client Manager), start the engine, and supervise:
//! signals, the resource observer, graceful shutdown. The logic lives in the library crates.

mod client;
mod config;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use config::Config;
use oasis_engine::{Engine, Listener, ResourceManager, Service};

#[derive(Parser)]
#[command(
    name = "oasis",
    version,
    about = "Oasis media storage-and-streaming server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (zero configuration: 127.0.0.1:8080, data in ./oasis-data).
    Serve(ServeArgs),
    /// Check or print configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ingest a directory into a data directory while no server runs (offline import).
    Import {
        /// Directory whose files become objects (object name = relative path).
        dir: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Prefix for the object names, e.g. "shows/2026".
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Upload a file, or a directory as a package (e.g. an HLS folder), to a running server.
    Put {
        path: PathBuf,
        /// Object name (for a directory: the name prefix). Default: the file or directory name.
        #[arg(long)]
        name: Option<String>,
        /// Bandwidth requirement of the object, bits/s (default: derived from the container).
        #[arg(long)]
        bitrate: Option<u64>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// List the objects of a running server.
    Ls {
        /// Only names starting with this prefix.
        prefix: Option<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Delete an object from a running server.
    Rm {
        name: String,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Show an object's metadata.
    Stat {
        name: String,
        #[command(flatten)]
        server: client::ServerArgs,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML; see oasis.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on; repeat for several network interfaces. Replaces `[[listen]]`.
    #[arg(long)]
    listen: Vec<std::net::SocketAddr>,
    /// Data directory. Replaces `[server] data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Worker layout: combined, combined:N, or f=F,nc=C,nd=D. Replaces `[engine] layout`.
    #[arg(long)]
    layout: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file.
    Check { file: PathBuf },
    /// Print the effective configuration, defaults filled in.
    Show {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Config> {
    match config {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(&file).map(|_| println!("{}: ok", file.display())),
        Command::Config {
            command: ConfigCommand::Show { config },
        } => load(config.as_ref()).and_then(|c| {
            print!(
                "{}",
                toml::to_string(&c).context("serializing the configuration")?
            );
            Ok(())
        }),
        Command::Import {
            dir,
            data_dir,
            prefix,
            config,
        } => import(dir, data_dir, prefix, config),
        Command::Put {
            path,
            name,
            bitrate,
            server,
        } => client::put(&server, &path, name, bitrate),
        Command::Ls { prefix, server } => client::ls(&server, prefix.as_deref()),
        Command::Rm { name, server } => client::rm(&server, &name),
        Command::Stat { name, server } => client::stat(&server, &name),
    };
    if let Err(e) = result {
        if e.downcast_ref::<config::Diagnostics>().is_some() {
            // One problem a line, each starting with its file:line:column.
            eprintln!("{e:#}");
        } else {
            eprintln!("oasis: {e:#}");
        }
        std::process::exit(1);
    }
}

/// Installs the diagnostic log (stderr). `RUST_LOG`, when set, wins over `filter`. The returned
/// handle replaces the filter later (configuration reload).
fn init_tracing(filter: &str) -> Option<reload::LogFilter> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = std::env::var("RUST_LOG").ok();
    let from_env = env.is_some();
    let filter = tracing_subscriber::EnvFilter::new(env.as_deref().unwrap_or(filter));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a terminal: a log file or journald gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .try_init()
        .ok()?;
    Some(reload::LogFilter { handle, from_env })
}

fn import(
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    prefix: Option<String>,
    config: Option<PathBuf>,
) -> Result<()> {
    let mut cfg = load(config.as_ref())?;
    init_tracing(&cfg.server.log_level);
    if let Some(d) = data_dir {
        cfg.server.data_dir = d;
    }
    let resolved = cfg.resolve(&oasis_engine::layout::available_cores())?;
    let rm = ResourceManager::new(&resolved.limits);
    let (store, recovery) = oasis_storage::Store::open(resolved.store, rm)?;
    if !recovery.is_clean() {
        eprintln!("recovery: {recovery:?}");
    }
    let report = oasis_storage::import_dir(&store, &dir, prefix.as_deref())?;
    for (path, why) in &report.skipped {
        eprintln!("skipped {}: {why}", path.display());
    }
    println!(
        "imported {} objects ({} bytes) into {}",
        report.imported.len(),
        report.imported_bytes,
        cfg.server.data_dir.display()
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let mut cfg = load(args.config.as_ref())?;
    let overrides = config::Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        layout: args.layout,
    };
    overrides.apply(&mut cfg);
    cfg.check()?;
    // The token from OASIS_API_TOKEN is held to the file's rule before anything starts.
    cfg.api_token()?;
    let log_filter = init_tracing(&cfg.server.log_level);

    // Nothing starts before io_uring is known to work.
    let features = oasis_engine::probe::probe()?;
    // A client that vanishes must not kill the server; sends use MSG_NOSIGNAL, this is the backstop.
    // SAFETY: setting SIGPIPE to SIG_IGN has no preconditions and happens before threads start.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    // Registered for the life of the process: a second SIGTERM during the drain is absorbed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let fds_wanted = cfg.resources.connections_max + cfg.storage.open_files_max as u64 + 1024;
    raise_fd_limit(fds_wanted);
    // Splicing connections hold a pipe each (two descriptors) on top of their socket.
    presize_fd_table(fds_wanted + 2 * cfg.resources.connections_max.min(8192));
    let cores = oasis_engine::layout::available_cores();
    let resolved = cfg.resolve(&cores)?;
    let rm = ResourceManager::new(&resolved.limits);
    let (store, recovery) = oasis_storage::Store::open(resolved.store, Arc::clone(&rm))?;
    if recovery.is_clean() {
        tracing::info!(
            "catalog: {} objects in {}",
            recovery.objects_loaded,
            cfg.server.data_dir.display()
        );
    } else {
        tracing::warn!("catalog: recovered after an unclean stop: {recovery:?}");
    }
    let metrics = oasis_net::Metrics::new(Arc::clone(&rm));
    let target = match cfg.server.access_log.as_str() {
        "off" => oasis_net::LogTarget::Off,
        "stdout" => oasis_net::LogTarget::Stdout,
        path => oasis_net::LogTarget::File(PathBuf::from(path)),
    };
    let (log, log_thread) = oasis_net::AccessLog::start(
        target,
        cfg.server.access_log_queue_lines,
        Arc::clone(&metrics),
    )?;
    let reload_metrics = Arc::clone(&metrics);
    if resolved.http.api_token.is_none() {
        tracing::warn!("no [http] api_token and no OASIS_API_TOKEN: uploads, deletes and /api are refused (403)");
    }
    let clock = oasis_net::WallClock::new(Instant::now(), SystemTime::now());
    let http = oasis_net::HttpService::new(
        resolved.http,
        Arc::clone(&store),
        Arc::clone(&rm),
        metrics,
        log,
        clock,
    );
    let listeners = cfg
        .listen
        .iter()
        .map(|l| Listener {
            addr: l.addr,
            service: Arc::new(http.clone()) as Arc<dyn Service>,
        })
        .collect();
    let layout = resolved.engine.layout.clone();
    let engine = Engine::start(
        resolved.engine,
        listeners,
        Arc::clone(&rm),
        features.clone(),
    )?;
    http.attach_engine(engine.handle());
    tracing::info!("{layout}");
    tracing::info!(
        "io_uring: kernel {}, defer_taskrun {}, multishot accept {}, send_zc {}, splice {}, read_fixed {}",
        features.kernel_release,
        features.defer_taskrun,
        features.multishot_accept,
        features.send_zc,
        features.splice,
        features.read_fixed
    );
    for l in &cfg.listen {
        tracing::info!(
            "listening on {} (bandwidth budget {} bit/s)",
            l.addr,
            l.bandwidth_bps
        );
    }

    let mut reloader = reload::Reloader {
        path: args.config,
        overrides,
        in_force: cfg.clone(),
        cores,
        http: http.clone(),
        metrics: reload_metrics,
        log: log_filter,
    };
    supervise(&mut signals, &rm, &store, resolved.observer, &mut reloader);
    let drain = Duration::from_secs(reloader.in_force.server.drain_timeout_secs);
    drop(reloader);
    tracing::info!("shutting down: draining for up to {drain:?}");
    engine.shutdown(drain);
    engine.join();
    http.detach_engine();
    drop(http);
    drop(store);
    if let Some(t) = log_thread {
        let _ = t.join();
    }
    tracing::info!("stopped");
    Ok(())
}

/// This process's RLIMIT_NOFILE, if it can be read.
fn nofile_limit() -> Option<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-pointer for the call.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim)
}

/// Raises RLIMIT_NOFILE toward `want` (connections + cached files + slack), as far as the hard
/// limit allows (or beyond it when privileged), and says so when it falls short.
fn raise_fd_limit(want: u64) {
    let Some(mut lim) = nofile_limit() else {
        return;
    };
    let before = lim.rlim_cur;
    if lim.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: `raised` is a valid rlimit; failure (no CAP_SYS_RESOURCE) is handled below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur < want.min(lim.rlim_max) {
        lim.rlim_cur = want.min(lim.rlim_max);
        // SAFETY: as above; the soft limit stays within the hard limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    let lim = nofile_limit().unwrap_or(lim);
    if lim.rlim_cur < want {
        tracing::warn!(
            "open files limited to {} (wanted {want} for connections_max + open_files_max); raise `ulimit -n` or LimitNOFILE",
            lim.rlim_cur
        );
    } else if lim.rlim_cur != before {
        tracing::info!("open files limit raised from {before} to {}", lim.rlim_cur);
    }
}

/// Grows the process's descriptor table to `want` entries (at most the open-files limit and
/// 2^20) now, before any thread starts.
///
/// The kernel grows the table by doubling when a new descriptor does not fit, and when the
/// table is shared (io_uring's worker threads share it) the thread that grows it waits in
/// `synchronize_rcu` for milliseconds; seen in workers (`expand_files`) during a cold sweep.
/// Sized once here, growth never happens on the data path. It costs about 8 bytes per entry
/// of kernel memory (~1 MiB for the default 100,000 connections).
fn presize_fd_table(want: u64) {
    let Some(lim) = nofile_limit() else {
        return;
    };
    let top = want.min(lim.rlim_cur).min(1 << 20);
    if top < 2 {
        return;
    }
    // Any descriptor of our own will do as the one to duplicate (stdin may be closed).
    let probe = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("descriptor table not presized: /dev/null: {e}");
            return;
        }
    };
    // SAFETY: duplicating our own open descriptor (or failing) has no memory effects; the
    // duplicate, if any, is closed right away and was never shared.
    let fd = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&probe),
            libc::F_DUPFD_CLOEXEC,
            (top - 1) as libc::c_int,
        )
    };
    if fd < 0 {
        tracing::debug!(
            "descriptor table not presized to {top}: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    // SAFETY: `fd` was just created here and nothing else knows it.
    unsafe { libc::close(fd) };
}

/// The supervisor: waits for a signal to stop, sampling the system for the Resource Manager once
/// a second meanwhile, and reloads the configuration on SIGHUP.
fn supervise(
    signals: &mut signal_hook::iterator::Signals,
    rm: &ResourceManager,
    store: &oasis_storage::Store,
    mut observer: oasis_engine::observer::ObserverConfig,
    reloader: &mut reload::Reloader,
) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let mut level = rm.level();
    loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => reloader.reload(&mut observer),
                _ => {
                    tracing::info!(
                        "received {}",
                        if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                    );
                    return;
                }
            }
        }
        // Critical events shrink caches within one tick (the fd cache closes idle files).
        store.shrink_caches_if_critical();
        if last_sample.elapsed() >= Duration::from_secs(1) {
            oasis_engine::observer::sample(rm, &observer);
            last_sample = Instant::now();
            let now_level = rm.level();
            if now_level != level {
                tracing::warn!(
                    "resource level {level} -> {now_level}: {:?}",
                    rm.sources_at(oasis_engine::resource::Level::Warning)
                );
                level = now_level;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
