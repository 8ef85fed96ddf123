//! The command line: `oasis` and its subcommands, as clap parses them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{accounts, client, logd, logs, monitor, ship};

#[derive(Parser)]
#[command(
    name = "oasis",
    version,
    about = "Oasis media storage-and-streaming server",
    after_help = "Start with `oasis serve`, then `oasis put FILE` from another shell. \
                  `oasis help COMMAND` shows each command's options and an example."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct ServeArgs {
    /// Configuration file (TOML; every key is documented in oasis.toml).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on; repeat for several network interfaces. Replaces `[[listen]]`.
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Vec<std::net::SocketAddr>,
    /// Data directory. Replaces `[server] data_dir`.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Worker layout: combined, combined:N, or f=F,nc=C,nd=D. Replaces `[engine] layout`.
    #[arg(long, value_name = "LAYOUT")]
    pub(crate) layout: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum ConfigCommand {
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

/// `oasis pool ...`.
#[derive(Subcommand)]
pub(crate) enum PoolCommand {
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
