//! `oasis`: the thin binary. Parse the command line and the configuration, build the modules
//! (Resource Manager, Media Object Manager, Client Manager), start the engine, and supervise:
//! signals, the resource observer, graceful shutdown. The logic lives in the library crates.

#![forbid(unsafe_code)]

mod accounts;
mod agent;
mod client;
mod config;
mod config_api;
mod library;
mod logd;
mod logs;
mod monitor;
mod notify;
mod pool;
mod reload;
mod ship;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use config::Config;
use oasis_engine::{Engine, Listener, ResourceManager, Service};

#[derive(Parser)]
#[command(
    name = "oasis",
    version,
    about = "Oasis media storage-and-streaming server",
    after_help = "Start with `oasis serve`, then `oasis put FILE` from another shell. \
                  `oasis help COMMAND` shows each command's options and an example."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (zero configuration: 127.0.0.1:8080, data in ./oasis-data).
    #[command(after_help = "Examples:\n  \
        OASIS_API_TOKEN=$(head -c 24 /dev/urandom | base64) oasis serve\n  \
        oasis serve --config /etc/oasis/oasis.toml --listen 0.0.0.0:8080 --data-dir /srv/oasis")]
    Serve(ServeArgs),
    /// Supervise processes (media servers, log servers): restart each at once when it dies, kill
    /// and restart it when its health URL stops answering. For hosts without systemd.
    #[command(after_help = "Example:\n  \
        oasis agent --config /etc/oasis/agent.toml     # see dist/agent.toml")]
    Agent {
        /// The agent's configuration file (TOML: one `[[process]]` table per process).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Check, print or change configuration (a file, or a running server's).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Ingest a directory into a data directory while no server runs (offline import).
    #[command(
        after_help = "Example:\n  oasis import ./library --data-dir /srv/oasis --prefix shows/2026"
    )]
    Import {
        /// Directory whose files become objects (object name = prefix + relative path).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Data directory to import into (default: the configuration's `[server] data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Prefix for the object names, e.g. "shows/2026".
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        /// Configuration file whose `[storage]` settings the import uses.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a data directory's catalog against its files; or rebuild a lost or damaged catalog
    /// from the files' own records. Offline: stop the server first.
    #[command(after_help = "Examples:\n  \
        oasis fsck --data-dir ./oasis-data\n  \
        oasis fsck --data-dir ./oasis-data --rebuild-catalog")]
    Fsck {
        /// The data directory to check.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Write a new catalog from the object files' own records (the old one is kept aside).
        #[arg(long)]
        rebuild_catalog: bool,
        /// Skip reading every file for its checksum (structure only).
        #[arg(long, conflicts_with = "rebuild_catalog")]
        no_checksums: bool,
    },
    /// Verify every object's checksum. Offline: stop the server first (the server scrubs in the
    /// background when `[storage] scrub_bytes_per_sec` is set).
    #[command(after_help = "Example:\n  oasis scrub --data-dir ./oasis-data")]
    Scrub {
        /// Data directory (default: the configuration's `[server] data_dir`).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Configuration file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy a data directory, consistently, while its server runs (hard links on the same file
    /// system, copies elsewhere; a second run is incremental). Serve the copy with --data-dir.
    #[command(after_help = "Example:\n  oasis backup --data-dir ./oasis-data /backups/oasis")]
    Backup {
        /// The data directory to back up.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Where the backup goes (a data directory of its own).
        #[arg(value_name = "DEST")]
        dest: PathBuf,
    },
    /// Upload a file, or a directory as a package (e.g. an HLS folder), to a running server.
    #[command(after_help = "Examples:\n  \
        oasis put movie.mp4\n  \
        oasis put ./show --name show          # show/index.m3u8, show/seg0.ts, ...\n  \
        oasis put talk.webm --bitrate 2500000")]
    Put {
        /// File to upload, or a directory whose files are uploaded under `--name`/.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// Object name (for a directory: the name prefix). Default: the file or directory name.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Bandwidth requirement of the object, bits/s (default: derived from the container;
        /// playlists have none).
        #[arg(long, value_name = "BPS")]
        bitrate: Option<u64>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// List the objects of a running server.
    #[command(after_help = "Examples:\n  oasis ls\n  oasis ls show/")]
    Ls {
        /// Only names starting with this prefix (a package: `show/`).
        #[arg(value_name = "PREFIX")]
        prefix: Option<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Delete an object, or with --prefix every object of a package, from a running server.
    #[command(after_help = "Examples:\n  oasis rm movie.mp4\n  oasis rm --prefix show/")]
    Rm {
        /// Name of the object to delete.
        #[arg(
            value_name = "NAME",
            required_unless_present = "prefix",
            conflicts_with = "prefix"
        )]
        name: Option<String>,
        /// Delete every object whose name starts with PREFIX (a package: `show/`).
        #[arg(long, value_name = "PREFIX")]
        prefix: Option<String>,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Manage accounts: add, ls, rm, rotate, revoke --old (offline on a data directory, or with
    /// --server against a running server).
    User {
        #[command(subcommand)]
        command: accounts::UserCommand,
    },
    /// Print a signed link to private media (from the configuration's `[links] keys`).
    #[command(after_help = "Examples:\n  \
        oasis sign premium/movie.mp4 --ttl 1h --config oasis.toml\n  \
        oasis sign show/index.m3u8 --package --ttl 6h --ip 203.0.113.7 --config oasis.toml")]
    Sign {
        /// The object the link opens.
        #[arg(value_name = "NAME")]
        name: String,
        /// How long the link works: 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DURATION", default_value = "1h")]
        ttl: String,
        /// Sign NAME's whole folder (an HLS package: its playlists and segments play through the
        /// one link).
        #[arg(long)]
        package: bool,
        /// Only this client address may use the link.
        #[arg(long, value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// Base URL the link starts with.
        #[arg(
            long,
            value_name = "URL",
            default_value = "http://127.0.0.1:8080",
            env = "OASIS_SERVER"
        )]
        base: String,
        /// Configuration file holding `[links] keys`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the audit trail: uploads, deletes, account and configuration changes, refusals.
    #[command(after_help = "Examples:\n  \
        oasis audit --since 1h --server http://127.0.0.1:8080\n  \
        oasis audit --action user_add --data-dir ./oasis-data")]
    Audit {
        /// Only records from this long ago on: 90s, 30m, 12h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Only this account's records.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Only this action (upload, replace, delete, user_add, config_patch, auth_refused, ...).
        #[arg(long, value_name = "ACTION")]
        action: Option<String>,
        /// At most this many records.
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        target: accounts::Target,
    },
    /// Run a log server: shippers send it append-only streams, acknowledged once durable.
    #[command(after_help = "Examples:\n  \
        oasis logd --listen 127.0.0.1:7420 --data-dir ./logd-a\n  \
        oasis logd --config /etc/oasis/logd.toml")]
    Logd(logd::LogdArgs),
    /// Run a monitor: every node's status datagrams on one live dashboard, as JSON, and as one
    /// Prometheus endpoint for the fleet.
    #[command(after_help = "Example:\n  \
        oasis monitor --udp 0.0.0.0:7470 --http 127.0.0.1:7471   # then open http://127.0.0.1:7471/\n  \
        (servers send to it with `[monitor] targets = [\"HOST:7470\"]` in oasis.toml)")]
    Monitor(monitor::MonitorArgs),
    /// Read what log servers hold: ls, cat STREAM, tail -f STREAM.
    Logs {
        #[command(subcommand)]
        command: logs::LogsCommand,
    },
    /// Ship a log file (followed across rotations) or standard input to log servers, resuming
    /// after dropped connections, dead servers and restarts without loss or repeat.
    #[command(after_help = "Examples:\n  \
        oasis log-ship --servers 10.0.0.5:7420,10.0.0.6:7420 --stream web-1/access /var/log/nginx/access.log\n  \
        myapp 2>&1 | oasis log-ship --servers 10.0.0.5:7420 --stream web-1/myapp -")]
    LogShip(ship::LogShipArgs),
    /// The pool this server belongs to (`[pool]`).
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
    /// Show an object's metadata (size, type, checksum, bitrate and where it came from).
    #[command(after_help = "Example:\n  oasis stat movie.mp4")]
    Stat {
        /// Name of the object.
        #[arg(value_name = "NAME")]
        name: String,
        #[command(flatten)]
        server: client::ServerArgs,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Configuration file (TOML; every key is documented in oasis.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; repeat for several network interfaces. Replaces `[[listen]]`.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<std::net::SocketAddr>,
    /// Data directory. Replaces `[server] data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Worker layout: combined, combined:N, or f=F,nc=C,nd=D. Replaces `[engine] layout`.
    #[arg(long, value_name = "LAYOUT")]
    layout: Option<String>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file: every error, with file:line:column and a hint.
    #[command(after_help = "Example:\n  oasis config check oasis.toml")]
    Check {
        /// The configuration file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the effective configuration, defaults filled in.
    #[command(after_help = "Example:\n  oasis config show --config oasis.toml")]
    Show {
        /// Configuration file to read (default: none, so the defaults).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a key (or all) of a running server's configuration in force, or of a file
    /// offline; secrets are redacted.
    #[command(after_help = "Examples:\n  \
        oasis config get pacing.factor_progressive --server http://127.0.0.1:8080\n  \
        oasis config get pacing --config oasis.toml")]
    Get(client::config::GetArgs),
    /// Change a key of a running server: checked as `oasis config check` does, written to its
    /// configuration file (comments kept) and put in force.
    #[command(after_help = "Examples:\n  \
        oasis config set pacing.factor_progressive 2.0\n  \
        oasis config set server.log_level oasis=debug --server http://10.0.0.5:8080\n  \
        oasis config set http.header_bytes_max 32768 --restart-pending")]
    Set(client::config::SetArgs),
}

fn load(config: Option<&PathBuf>) -> Result<Config> {
    match config {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// `oasis pool ...`.
#[derive(Subcommand)]
enum PoolCommand {
    /// The pool's nodes (live or down, load) and how many objects lack copies, as one node sees
    /// them (`GET /api/pool`; a monitor, auditor or admin token).
    #[command(after_help = "Example:\n  oasis pool status --server http://10.0.0.1:8080")]
    Status {
        /// Print the server's JSON as it is.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: client::ServerArgs,
    },
}

fn main() {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Import { .. }
            | Command::Fsck { .. }
            | Command::Scrub { .. }
            | Command::Backup { .. }
            | Command::User { .. }
            | Command::Audit { .. }
            | Command::Logs { .. }
    ) {
        // The offline commands print their own results; the log says only what goes wrong.
        init_tracing("warn", None);
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Logd(args) => logd::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::Logs { command } => logs::run(command),
        Command::Agent { config } => {
            init_tracing("info", None);
            agent::run(&config)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Config::load(&file).map(|_| println!("{}: ok", file.display())),
        Command::Config {
            command: ConfigCommand::Show { config },
        } => load(config.as_ref()).and_then(|mut c| {
            if !c.pool.catalog.is_empty() {
                c.pool.catalog = oasis_storage::redact_url(&c.pool.catalog);
            }
            print!(
                "{}",
                toml::to_string(&c).context("serializing the configuration")?
            );
            Ok(())
        }),
        Command::Config {
            command: ConfigCommand::Get(args),
        } => client::config::get(&args),
        Command::Config {
            command: ConfigCommand::Set(args),
        } => client::config::set(&args),
        Command::Import {
            dir,
            data_dir,
            prefix,
            config,
        } => library::import(&dir, data_dir, prefix.as_deref(), config.as_ref()),
        Command::Fsck {
            data_dir,
            rebuild_catalog,
            no_checksums,
        } => library::fsck(&data_dir, rebuild_catalog, !no_checksums),
        Command::Scrub { data_dir, config } => library::scrub(data_dir, config.as_ref()),
        Command::Backup { data_dir, dest } => library::backup(&data_dir, &dest),
        Command::Put {
            path,
            name,
            bitrate,
            server,
        } => client::put(&server, &path, name, bitrate),
        Command::Ls { prefix, server } => client::ls(&server, prefix.as_deref()),
        Command::Rm {
            name,
            prefix,
            server,
        } => match (name, prefix) {
            (_, Some(p)) => client::rm_prefix(&server, &p),
            (Some(n), None) => client::rm(&server, &n),
            (None, None) => unreachable!("clap requires a name or --prefix"),
        },
        Command::Stat { name, server } => client::stat(&server, &name),
        Command::Pool {
            command: PoolCommand::Status { server, json },
        } => client::pool_status(&server, json),
        Command::LogShip(args) => ship::log_ship(args),
        Command::User { command } => accounts::user(command),
        Command::Sign {
            name,
            ttl,
            package,
            ip,
            base,
            config,
        } => accounts::sign(&name, &ttl, package, ip, &base, &config),
        Command::Audit {
            since,
            user,
            action,
            limit,
            target,
        } => accounts::audit(since.as_deref(), user, action, limit, target),
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
/// handle replaces the filter later (configuration reload). With `ship`, events that pass its
/// filter (`[log] level`, replaceable too) also go to the log servers; each layer has its own
/// filter, so neither level limits the other.
fn init_tracing(
    filter: &str,
    ship: Option<(oasis_log::ship::layer::ShipLayer, &str)>,
) -> Option<reload::LogFilter> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let env = std::env::var("RUST_LOG").ok();
    let from_env = env.is_some();
    let filter = tracing_subscriber::EnvFilter::new(env.as_deref().unwrap_or(filter));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let (shipped, ship_handle) = match ship {
        Some((layer, level)) => {
            let (f, h) =
                tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(level));
            (Some(layer.with_filter(f)), Some(h))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colours only for a terminal: a log file or journald gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(shipped)
        .try_init()
        .ok()?;
    let ship = ship_handle.map(|h| {
        Box::new(move |f: tracing_subscriber::EnvFilter| h.reload(f).map_err(|e| e.to_string()))
            as reload::ShipFilter
    });
    Some(reload::LogFilter {
        handle,
        from_env,
        ship,
    })
}

fn serve(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let mut cfg = load(args.config.as_ref())?;
    let mut overrides = config::Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        layout: args.layout,
        connections_max: None,
        open_files_max: None,
    };
    overrides.apply(&mut cfg);
    cfg.check()?;
    // The token from OASIS_API_TOKEN is held to the file's rule before anything starts.
    cfg.api_token()?;
    // Shipped logs start first, so the start-up's own events are shipped too.
    let own_logs = ship::OwnLogs::start(&cfg)?;
    let log_filter = init_tracing(
        &cfg.server.log_level,
        own_logs.events_layer().map(|l| (l, cfg.log.level.as_str())),
    );

    // Nothing starts before io_uring is known to work.
    let features = oasis_engine::probe::probe()?;
    oasis_engine::host::ignore_sigpipe();
    // Registered for the life of the process: a second SIGTERM during the drain is absorbed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    fit_fd_limit(&cfg, &mut overrides);
    overrides.apply(&mut cfg);
    let fds_wanted = cfg.resources.connections_max + cfg.storage.open_files_max as u64 + FD_SLACK;
    // Splicing connections hold a pipe each (two descriptors) on top of their socket.
    if let Err(e) = oasis_engine::host::presize_fd_table(
        fds_wanted + 2 * cfg.resources.connections_max.min(8192),
    ) {
        tracing::debug!("descriptor table not presized: {e}");
    }
    let cores = oasis_engine::layout::available_cores();
    let resolved = cfg.resolve(&cores)?;
    if resolved.limits.disk_space_bytes.limit == 0 {
        tracing::warn!(
            "disk space budget is 0: the data directory's file system has less free space than [resources] disk_free_critical_bytes ({}); uploads get 507 until space is freed and the server restarted (or set disk_space_bytes); stored objects are served",
            cfg.resources.disk_free_critical_bytes
        );
    }
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
    let (log, log_thread) = oasis_net::AccessLog::start_teed(
        target,
        own_logs.access_tee(),
        cfg.server.access_log_queue_lines,
        Arc::clone(&metrics),
    )?;
    let reload_metrics = Arc::clone(&metrics);
    let status_metrics = Arc::clone(&metrics);
    let no_api_token = resolved.http.api_token.is_none();
    let pool_settings = pool::settings(&cfg, resolved.http.api_token.as_deref())?;
    let clock = oasis_net::WallClock::new(Instant::now(), SystemTime::now());
    let http = oasis_net::HttpService::new(
        resolved.http,
        Arc::clone(&store),
        Arc::clone(&rm),
        metrics,
        log,
        clock,
    );
    // The User Manager: accounts from the catalog, and the audit trail written behind it.
    let accounts = oasis_net::auth::manage::load_index(&store, &http.users())?;
    match (accounts, no_api_token) {
        (0, true) => tracing::warn!(
            "no accounts, no [http] api_token and no OASIS_API_TOKEN: uploads, deletes and /api are refused (403); create an admin with `oasis user add NAME --role admin`"
        ),
        (0, false) => tracing::info!("accounts: none; [http] api_token is the admin"),
        (n, _) => tracing::info!("accounts: {n}"),
    }
    let audit = oasis_storage::AuditLog::start(
        Arc::clone(&store),
        oasis_storage::AuditConfig {
            queue_max: cfg.audit.queue_max,
            retention_days: cfg.audit.retention_days,
            ..Default::default()
        },
    );
    http.attach_audit(audit.clone());
    let listeners = cfg
        .listen
        .iter()
        .map(|l| Listener {
            addr: l.addr,
            service: Arc::new(http.clone()) as Arc<dyn Service>,
        })
        .collect();
    if let Some(settings) = &pool_settings {
        pool::reconcile_at_start(settings, &store)?;
    }
    let layout = resolved.engine.layout.clone();
    let engine = Engine::start(
        resolved.engine,
        listeners,
        Arc::clone(&rm),
        features.clone(),
    )?;
    http.attach_engine(engine.handle());
    // A pool node heartbeats from here on: its listeners answer.
    let pool = pool_settings
        .map(|settings| pool::Pool::attach(settings, &store, &rm, &http))
        .transpose()?;
    // The background scrub: its own thread, paced, charged to the disk read account.
    if let Some(scrub) = resolved.scrub.clone() {
        let rate = scrub.bytes_per_sec;
        let scrubber = oasis_storage::Scrubber::start(Arc::clone(&store), Arc::clone(&rm), scrub);
        http.attach_scrubber(Arc::new(scrubber));
        tracing::info!("background scrub: {rate} bytes/s, first pass in 5 minutes (POST /api/scrub starts one now)");
    }
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
    // The address each listener got: a port 0 in the configuration is the one the kernel chose.
    for (l, addr) in cfg.listen.iter().zip(engine.local_addrs()) {
        tracing::info!(
            "listening on {addr} (bandwidth budget {} bit/s)",
            l.bandwidth_bps
        );
    }

    // SIGHUP and `PATCH /api/config` change the configuration through this one reloader.
    let observer = Arc::new(RwLock::new(resolved.observer));
    let reloader = Arc::new(Mutex::new(reload::Reloader {
        path: args.config,
        overrides,
        in_force: cfg.clone(),
        cores,
        http: http.clone(),
        metrics: reload_metrics,
        log: log_filter,
        observer: Arc::clone(&observer),
    }));
    http.attach_config_control(Arc::new(config_api::ConfigApi::new(Arc::clone(&reloader))));
    let addrs: Vec<String> = engine.local_addrs().iter().map(|a| a.to_string()).collect();
    let serving = format!("serving on {}", addrs.join(", "));
    let node = monitor::node_name(addrs.first().map_or("serve", String::as_str));
    let mut reporter =
        monitor::Reporter::start(&cfg.monitor, oasis_monitor::Role::Serve, &node, started);
    let status_http = http.clone();
    let status_pool = pool.clone();
    let mut report = || {
        if let Some(r) = reporter.as_mut() {
            r.tick(|s| {
                monitor::fill_resources(s, &rm);
                let (requests, errors) = status_metrics.responses_total();
                s.requests_total = requests;
                s.errors_total = errors;
                s.sent_bytes_total = status_metrics.sent_bytes.get();
                s.received_bytes_total = status_metrics.received_bytes.get();
                s.active_streams = u32::try_from(status_metrics.active_streams.get()).unwrap_or(0);
                s.config_generation = status_http.generation() + 1;
                s.pool = status_pool.as_ref().map(|p| p.summary());
            });
        }
    };
    notify::ready();
    notify::status(&serving);
    supervise(
        &mut signals,
        &rm,
        &store,
        &observer,
        &reloader,
        &serving,
        &mut report,
    );
    drop(status_http);
    notify::stopping();
    let drain = Duration::from_secs(lock(&reloader).in_force.server.drain_timeout_secs);
    // The control holds the reloader, which holds the service: the cycle is cut here.
    http.detach_config_control();
    drop(reloader);
    http.detach_pool();
    if let Some(p) = pool {
        p.stop();
    }
    tracing::info!("shutting down: draining for up to {drain:?}");
    notify::status(&format!("draining for up to {} s", drain.as_secs()));
    engine.shutdown(drain);
    engine.join();
    http.detach_engine();
    http.detach_scrubber();
    drop(http);
    // What the sessions recorded is in the catalog before the store closes.
    audit.flush();
    drop(audit);
    drop(store);
    if let Some(t) = log_thread {
        let _ = t.join();
    }
    tracing::info!("stopped");
    own_logs.stop();
    Ok(())
}

/// Makes the open-files limit hold `connections_max + open_files_max` (plus slack), raising it
/// where the host allows. When it cannot and `connections_max` was left at its default, the
/// default shrinks to what fits, said once at info level; only a value the operator asked for
/// draws a warning. On such a host the descriptors go to connections first: the file cache (when
/// `open_files_max` is at its default) and the slack shrink to a share of the limit
/// ([`fd_shares`]), since a viewer refused costs more than a cached file reopened.
fn fit_fd_limit(cfg: &Config, overrides: &mut config::Overrides) {
    let asked =
        cfg.resources.connections_max != config::ResourcesSection::default().connections_max;
    let files_asked =
        cfg.storage.open_files_max != config::StorageSection::default().open_files_max;
    let files = cfg.storage.open_files_max as u64 + FD_SLACK;
    let want = cfg.resources.connections_max + files;
    let Some(limit) = oasis_engine::host::raise_nofile_limit(want) else {
        return;
    };
    if limit >= want {
        return;
    }
    if asked {
        tracing::warn!(
            "open files limited to {limit}, below the {want} that connections_max ({}) + open_files_max ({}) + {FD_SLACK} need; \
             raise `ulimit -n` (LimitNOFILE= under systemd) or lower connections_max",
            cfg.resources.connections_max,
            cfg.storage.open_files_max
        );
        return;
    }
    let (open_files, slack) = fd_shares(limit, cfg.storage.open_files_max as u64, files_asked);
    let fit = limit
        .saturating_sub(open_files + slack)
        .max(CONNECTIONS_FLOOR);
    tracing::info!(
        "open files limited to {limit}: connections_max is {fit} on this host (default {}), open_files_max {open_files}; \
         raise `ulimit -n` (LimitNOFILE= under systemd) for more",
        cfg.resources.connections_max
    );
    overrides.connections_max = Some(fit);
    if !files_asked {
        overrides.open_files_max = Some(open_files as usize);
    }
}

/// The file cache's and the slack's descriptors on a host whose open-files `limit` cannot hold
/// the defaults: a twentieth of the limit for cached files (unless the operator set
/// `open_files_max`, `files_asked`) and a fortieth for the slack, each at least a floor and at
/// most its default. At 20,000 descriptors: 1,000 files and 500 spare, 18,500 connections
/// (with the defaults' 4,096 and 1,024 it was 14,880).
fn fd_shares(limit: u64, open_files_max: u64, files_asked: bool) -> (u64, u64) {
    let files = if files_asked {
        open_files_max
    } else {
        (limit / 20).clamp(FILES_FLOOR, open_files_max.max(FILES_FLOOR))
    };
    let slack = (limit / 40).clamp(SLACK_FLOOR, FD_SLACK);
    (files, slack)
}

/// Descriptors kept free beyond connections and cached files (listeners, rings, logs, catalog).
const FD_SLACK: u64 = 1024;
/// Fewest descriptors a fitted slack keeps.
const SLACK_FLOOR: u64 = 128;
/// Fewest cached files a fitted file cache keeps.
const FILES_FLOOR: u64 = 64;
/// Fewest connections a host-fitted default leaves.
const CONNECTIONS_FLOOR: u64 = 64;

fn lock(reloader: &Mutex<reload::Reloader>) -> std::sync::MutexGuard<'_, reload::Reloader> {
    reloader.lock().unwrap_or_else(|e| e.into_inner())
}

/// The supervisor: waits for a signal to stop, sampling the system for the Resource Manager once
/// a second meanwhile (with the observer thresholds in force), and reloads the configuration on
/// SIGHUP (waiting for a `PATCH /api/config` being written, if one is). Under systemd it feeds
/// the watchdog (every 50 ms tick checks whether half of `WatchdogSec=` has passed) and keeps
/// `STATUS=` current: `serving`, plus the resource level when it is not normal. Each tick calls
/// `report`, which sends a status datagram when one is due (`[monitor]`).
fn supervise(
    signals: &mut signal_hook::iterator::Signals,
    rm: &ResourceManager,
    store: &oasis_storage::Store,
    observer: &RwLock<oasis_engine::observer::ObserverConfig>,
    reloader: &Mutex<reload::Reloader>,
    serving: &str,
    report: &mut dyn FnMut(),
) {
    use signal_hook::consts::{SIGHUP, SIGTERM};
    let mut last_sample = Instant::now() - Duration::from_secs(10);
    let mut level = rm.level();
    let mut watchdog = notify::Watchdog::from_env();
    loop {
        watchdog.tick();
        report();
        for sig in signals.pending() {
            match sig {
                SIGHUP => lock(reloader).reload(),
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
            let thresholds = observer.read().unwrap_or_else(|e| e.into_inner()).clone();
            oasis_engine::observer::sample(rm, &thresholds);
            last_sample = Instant::now();
            let now_level = rm.level();
            if now_level != level {
                tracing::warn!(
                    "resource level {level} -> {now_level}: {:?}",
                    rm.sources_at(oasis_engine::resource::Level::Warning)
                );
                level = now_level;
                if level == oasis_engine::resource::Level::Normal {
                    notify::status(serving);
                } else {
                    notify::status(&format!("{serving}; resource level {level}"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
