//! The PostgreSQL catalog's connection: one session to the server named by a
//! `postgres://user@host:port/db` URL, opened at the first call that needs it and again at the
//! first call after it broke, with every wait bounded (connect timeout, TCP keepalives and user
//! timeout, `statement_timeout` on the session).
//!
//! Every transaction goes through [`Conn::transaction`], which retries it from the start when the
//! server reports a serialization failure or a deadlock (SQLSTATE 40001 / 40P01: what PostgreSQL
//! at `SERIALIZABLE` and the distributed PostgreSQL-wire databases ask clients to do). Errors name
//! the URL with its password replaced. This module knows no table: it runs what it is given.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Transaction};

use crate::catalog::CatalogError;

/// The backend's name in messages.
pub(super) const BACKEND: &str = "postgres";
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement may run on the server (`statement_timeout`), milliseconds.
const STATEMENT_TIMEOUT_MS: u64 = 30_000;
/// Unacknowledged data on a dead connection gives up after this (`TCP_USER_TIMEOUT`). The
/// kernel acknowledges within milliseconds whatever the query costs, so only a network that
/// drops packets silently (a pulled link) meets it; a pool node's request path and heartbeat
/// wait at most this long to learn that the catalog is gone.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a transaction is run when the server keeps asking for a retry.
const TRANSACTION_ATTEMPTS: u32 = 8;

/// `url` with the password of its user part (and any `password=` parameter) replaced by
/// `<redacted>`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<a catalog URL that is not postgres://...>".to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>@{hosts}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_string(),
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => {
                        format!("{k}=<redacted>")
                    }
                    _ => p.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

/// The connection settings of a catalog URL, or why it is not one (without the password).
fn parse_url(url: &str) -> Result<postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("the catalog must be a URL like postgres://user@host:5432/database".into());
    }
    url.parse().map_err(|e| {
        format!("the URL does not parse ({e}); write it as postgres://user@host:5432/database")
    })
}

/// Why `url` is not a catalog URL this backend takes, or `None` when it is (nothing connects).
pub fn url_problem(url: &str) -> Option<String> {
    parse_url(url).err()
}

/// What a step of a transaction can fail with: the server's error, or a row the catalog refuses.
pub(super) enum TxError {
    Pg(postgres::Error),
    Catalog(CatalogError),
}

impl From<postgres::Error> for TxError {
    fn from(e: postgres::Error) -> Self {
        TxError::Pg(e)
    }
}

impl From<CatalogError> for TxError {
    fn from(e: CatalogError) -> Self {
        TxError::Catalog(e)
    }
}

/// One session to the catalog's server, reopened when it breaks.
pub(super) struct Conn {
    config: postgres::Config,
    /// The URL with its password redacted.
    shown: String,
    client: Option<Client>,
}

impl Conn {
    /// Parses `url` (no connection yet). Only `postgres://` and `postgresql://` URLs are taken.
    pub(super) fn new(url: &str) -> Result<Conn, CatalogError> {
        let shown = redact_url(url);
        let mut config = parse_url(url).map_err(|why| CatalogError::Unreachable {
            url: shown.clone(),
            why,
        })?;
        config
            .application_name("oasis")
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(TCP_USER_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3);
        Ok(Conn {
            config,
            shown,
            client: None,
        })
    }

    /// The URL with its password redacted.
    pub(super) fn shown(&self) -> &str {
        &self.shown
    }

    /// The open session, opening one (and setting its timeouts) if there is none or it broke.
    fn client(&mut self) -> Result<&mut Client, CatalogError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.client.is_none() {
            let unreachable = |e: postgres::Error| CatalogError::Unreachable {
                url: self.shown.clone(),
                why: format!("{e}"),
            };
            let mut client = self.config.connect(NoTls).map_err(unreachable)?;
            client
                .batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                .map_err(unreachable)?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    /// Runs `body` in one transaction and commits it; on a serialization failure or deadlock the
    /// whole transaction runs again (a few times). `op` names the work in errors.
    pub(super) fn transaction<T>(
        &mut self,
        op: &'static str,
        mut body: impl FnMut(&mut Transaction<'_>) -> Result<T, TxError>,
    ) -> Result<T, CatalogError> {
        let mut attempt = 1;
        loop {
            let client = self.client()?;
            let result = match client.transaction() {
                Ok(mut tx) => match body(&mut tx) {
                    Ok(value) => tx.commit().map(|()| value).map_err(TxError::Pg),
                    Err(e) => Err(e),
                },
                Err(e) => Err(TxError::Pg(e)),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(TxError::Catalog(e)) => return Err(e),
                Err(TxError::Pg(e)) if retryable(&e) && attempt < TRANSACTION_ATTEMPTS => {
                    tracing::debug!(target: "oasis::storage", op, attempt, "catalog transaction retried: {e}");
                    attempt += 1;
                }
                Err(TxError::Pg(e)) => return Err(self.error(op, e)),
            }
        }
    }

    /// Runs `body` on the session outside an explicit transaction (one statement, read-only or
    /// atomic by itself).
    pub(super) fn with<T>(
        &mut self,
        op: &'static str,
        body: impl FnOnce(&mut Client) -> Result<T, TxError>,
    ) -> Result<T, CatalogError> {
        let client = self.client()?;
        match body(client) {
            Ok(value) => Ok(value),
            Err(TxError::Catalog(e)) => Err(e),
            Err(TxError::Pg(e)) => Err(self.error(op, e)),
        }
    }

    /// The catalog error for `e`; a session that broke is dropped, so the next call reconnects.
    fn error(&mut self, op: &'static str, e: postgres::Error) -> CatalogError {
        let broken = e.is_closed()
            || self.client.as_ref().is_none_or(Client::is_closed)
            || matches!(
                e.code(),
                Some(c) if *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
            );
        if broken {
            self.client = None;
            return CatalogError::Unreachable {
                url: self.shown.clone(),
                why: format!("the connection broke while trying to {op}: {e}"),
            };
        }
        match e.code() {
            Some(c) if *c == SqlState::DISK_FULL => CatalogError::Full {
                backend: BACKEND,
                op,
            },
            Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
                CatalogError::Corrupt {
                    backend: BACKEND,
                    source: Box::new(e),
                }
            }
            _ => CatalogError::Backend {
                backend: BACKEND,
                op,
                source: Box::new(e),
            },
        }
    }
}

/// The server asks for the transaction to be run again.
fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_wherever_they_are() {
        assert_eq!(
            redact_url("postgres://oasis:s3cret@db.example:5432/oasis"),
            "postgres://oasis:<redacted>@db.example:5432/oasis"
        );
        assert_eq!(
            redact_url("postgres://oasis@db:5432/oasis?sslmode=disable&password=x"),
            "postgres://oasis@db:5432/oasis?sslmode=disable&password=<redacted>"
        );
        assert_eq!(
            redact_url("postgresql://u:p:q@h/db"),
            "postgresql://u:<redacted>@h/db"
        );
        assert_eq!(redact_url("postgres://h"), "postgres://h");
        assert!(!redact_url("host=h password=p").contains("password=p"));
    }

    #[test]
    fn only_postgres_urls_are_taken() {
        let err = Conn::new("host=h password=secret")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("postgres://user@host:5432/database"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(Conn::new("postgres://u@127.0.0.1:1/db").is_ok());
    }
}
