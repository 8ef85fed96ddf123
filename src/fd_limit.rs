//! Fitting the defaults to the host's open-files limit: connections first, then the file cache
//! and the slack.

use crate::config::{self, Config};

/// Makes the open-files limit hold `connections_max + open_files_max` (plus slack), raising it
/// where the host allows. When it cannot and `connections_max` was left at its default, the
/// default shrinks to what fits, said once at info level; only a value the operator asked for
/// draws a warning. On such a host the descriptors go to connections first: the file cache (when
/// `open_files_max` is at its default) and the slack shrink to a share of the limit
/// ([`fd_shares`]), since a viewer refused costs more than a cached file reopened.
pub(crate) fn fit_fd_limit(cfg: &Config, overrides: &mut config::Overrides) {
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
pub(crate) const FD_SLACK: u64 = 1024;
/// Fewest descriptors a fitted slack keeps.
const SLACK_FLOOR: u64 = 128;
/// Fewest cached files a fitted file cache keeps.
const FILES_FLOOR: u64 = 64;
/// Fewest connections a host-fitted default leaves.
const CONNECTIONS_FLOOR: u64 = 64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tight_limit_goes_to_connections_first() {
        // The host of the benchmarks: 20,000 descriptors, the defaults' 4,096 files left as is.
        assert_eq!(fd_shares(20_000, 4096, false), (1_000, 500));
        // An operator's open_files_max is kept; the slack never passes its default.
        assert_eq!(fd_shares(20_000, 300, true), (300, 500));
        assert_eq!(fd_shares(1_000_000, 4096, false), (4096, FD_SLACK));
        // A tiny limit keeps the floors.
        assert_eq!(fd_shares(1_000, 4096, false), (FILES_FLOOR, SLACK_FLOOR));
    }
}
