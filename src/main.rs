//! `oasis`: the thin binary. Parse the command line and the configuration, build the modules
//! (Resource Manager, Media Object Manager, Client Manager), start the engine, and supervise:
//! signals, the resource observer, graceful shutdown. The logic lives in the library crates.

#![forbid(unsafe_code)]

mod accounts;
mod agent;
mod cli;
mod client;
mod config;
mod config_api;
mod fd_limit;
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
use clap::Parser;

use cli::{Cli, Command, ConfigCommand, PoolCommand, ServeArgs};
use config::Config;
use oasis_engine::{Engine, Listener, ResourceManager, Service};

fn load(config: Option<&PathBuf>) -> Result<Config> {
    match config {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
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
    fd_limit::fit_fd_limit(&cfg, &mut overrides);
    overrides.apply(&mut cfg);
    let fds_wanted =
        cfg.resources.connections_max + cfg.storage.open_files_max as u64 + fd_limit::FD_SLACK;
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
