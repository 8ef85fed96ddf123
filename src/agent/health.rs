//! The HTTP health probe: one `GET health_url` on a fresh connection, bounded by
//! `health_timeout_ms` from resolving the name to the response head. A 2xx answer is healthy;
//! anything else (refused, timed out, another status) is a failure, described in one line.
//!
//! It does not decide what failures mean (`policy::Health` does), follow redirects, or speak TLS.

use std::time::Duration;

/// Probes one URL; made once per supervised process and reused.
pub struct Probe {
    agent: ureq::Agent,
    url: String,
    timeout: Duration,
}

impl Probe {
    /// A probe of `url` that gives up after `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Probe {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            // A fresh connection each time: a kept-alive one would test an old process.
            .max_idle_connections(0)
            .build()
            .into();
        Probe {
            agent,
            url: url.to_string(),
            timeout,
        }
    }

    /// `Ok` when the URL answers 2xx, else what happened.
    pub fn check(&self) -> Result<(), String> {
        match self.agent.get(&self.url).call() {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
            Err(ureq::Error::Timeout(_)) => Err(format!(
                "no answer within health_timeout_ms ({} ms)",
                self.timeout.as_millis()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn a_2xx_is_healthy_and_other_answers_are_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).unwrap();
                write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
            }
            // A third connection is accepted and never answered.
            let (s, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(s);
        });
        let probe = Probe::new(
            &format!("http://{addr}/healthz"),
            Duration::from_millis(300),
        );
        assert_eq!(probe.check(), Ok(()));
        assert_eq!(probe.check(), Err("HTTP 503".to_string()));
        let silent = probe.check().unwrap_err();
        assert_eq!(silent, "no answer within health_timeout_ms (300 ms)");
        server.join().unwrap();
    }

    #[test]
    fn a_closed_port_is_a_failure() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let probe = Probe::new(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(5));
        assert!(probe.check().is_err());
    }
}
