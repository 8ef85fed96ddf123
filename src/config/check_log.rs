//! Value checks of `[log]`: the log servers this server ships its own logs to, its node name and
//! the shipped events' filter. Pure, like the rest of `check`.

use super::check::Problems;
use super::Config;

/// Longest `[log] node`: the stream names `<node>/events` and `<node>/access` stay well inside
/// the protocol's 200 bytes.
pub const NODE_BYTES_MAX: usize = 64;

/// Why `node` cannot begin a stream name, if it cannot (empty is allowed: the host name).
pub fn node_problem(node: &str) -> Option<String> {
    if node.len() > NODE_BYTES_MAX {
        return Some(format!("is {} bytes; at most {NODE_BYTES_MAX}", node.len()));
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !node.bytes().all(allowed) || node == "." || node == ".." {
        return Some(format!(
            "{node:?} may hold only A-Z a-z 0-9 . _ - (it begins the stream names <node>/events and <node>/access)"
        ));
    }
    None
}

/// Why `server` is not `host:port`, if it is not.
fn server_problem(server: &str) -> Option<String> {
    let Some((host, port)) = server.rsplit_once(':') else {
        return Some(format!("{server:?} has no port"));
    };
    if host.is_empty() {
        return Some(format!("{server:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => None,
        _ => Some(format!("{server:?}: the port must be 1 to 65535")),
    }
}

impl Config {
    pub(super) fn check_log(&self, out: &mut Problems) {
        let log = &self.log;
        let max = oasis_log::ship::SERVERS_MAX;
        if log.ship_to.len() > max {
            out.add(
                "log",
                "ship_to",
                format!("{} servers; at most {max}", log.ship_to.len()),
            );
        }
        for (i, server) in log.ship_to.iter().enumerate() {
            if let Some(why) = server_problem(server) {
                out.add("log", "ship_to", why)
                    .hint("ship_to = [\"10.0.0.5:7420\", \"logs-2.example.net:7420\"]");
            } else if log.ship_to[..i].contains(server) {
                out.add("log", "ship_to", format!("{server} is listed twice"));
            }
        }
        if let Some(why) = node_problem(&log.node) {
            out.add("log", "node", why)
                .hint("e.g. node = \"web-1\"; leave it empty for the host name");
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log.level) {
            out.add(
                "log",
                "level",
                format!("{:?} is not a tracing filter ({e})", log.level),
            )
            .hint("e.g. level = \"info\" or \"warn,oasis_net=info\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> String {
        match Config::parse(text, "t") {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_log_sections_pass() {
        assert_eq!(problems(""), "");
        assert_eq!(
            problems("[log]\nship_to = [\"127.0.0.1:7000\", \"logs.example.net:7001\", \"[::1]:7000\"]\nnode = \"web-1.eu\"\nlevel = \"warn,oasis=info\"\n"),
            ""
        );
    }

    #[test]
    fn bad_values_are_located_and_say_what_to_write() {
        let err = problems("[log]\nship_to = [\"127.0.0.1\"]\n");
        assert!(
            err.starts_with("t:2:11: [log] ship_to: \"127.0.0.1\" has no port"),
            "{err}"
        );
        assert!(err.contains("hint: ship_to = ["), "{err}");
        let err = problems("[log]\nship_to = [\"a:1\", \"a:1\"]\n");
        assert!(err.contains("a:1 is listed twice"), "{err}");
        let err = problems("[log]\nship_to = [\"a:0\"]\n");
        assert!(err.contains("the port must be 1 to 65535"), "{err}");
        let err = problems("[log]\nnode = \"web/1\"\n");
        assert!(err.starts_with("t:2:8: [log] node: "), "{err}");
        assert!(err.contains("hint: e.g. node = \"web-1\""), "{err}");
        let err = problems("[log]\nlevel = \"oasis=loud\"\n");
        assert!(err.starts_with("t:2:9: [log] level: "), "{err}");
    }

    #[test]
    fn node_names_begin_valid_stream_names() {
        for good in [
            "web-1",
            "a",
            "host.example.net",
            &"n".repeat(NODE_BYTES_MAX),
        ] {
            assert_eq!(node_problem(good), None, "{good}");
            oasis_log::proto::validate_stream(&format!("{good}/events")).unwrap();
        }
        for bad in [".", "..", "a/b", "a b", &"n".repeat(NODE_BYTES_MAX + 1)] {
            assert!(node_problem(bad).is_some(), "{bad}");
        }
    }
}
