//! Who may do what: the one place the roles of the User Manager are decided.
//!
//! A request is turned into an [`Action`] by the router and its credentials into a
//! [`Principal`]; [`decide`] answers from the table below, nothing else in the server asks
//! "is this allowed". Reads of media also depend on the object's prefix policy
//! ([`ReadPolicy`], from `[[access]]`), which [`decide`] takes as input. The answer never depends
//! on whether an object exists: a refusal comes before any lookup, so it gives no hint.
//!
//! | action                          | guest | auditor | provider          | monitor | admin |
//! |---------------------------------|-------|---------|-------------------|---------|-------|
//! | read `public` media             | yes   | yes     | yes               | yes     | yes   |
//! | read `token` media              | yes   | yes     | yes               | yes     | yes   |
//! | read `signed` media (no link)   | no    | no      | in its prefixes   | no      | yes   |
//! | upload, replace, delete         | no    | no      | in its prefixes   | no      | yes   |
//! | list objects                    | no    | yes     | in its prefixes   | no      | yes   |
//! | `/api/status`                   | no    | yes     | no                | yes     | yes   |
//! | `/metrics` (unless public)      | no    | no      | no                | yes     | yes   |
//! | audit trail                     | no    | yes     | no                | no      | yes   |
//! | users, configuration, scrub     | no    | no      | no                | no      | yes   |
//!
//! Anonymous clients read `public` media (and `/metrics` when `metrics_public`); everything else
//! is 401 for them. A signed link grants the read of the objects it covers and nothing else; it is
//! checked before this table is consulted.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The roles of the User Manager (the design's special accounts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads media that needs a token.
    Guest,
    /// Reads the audit trail, listings and status.
    Auditor,
    /// Uploads, replaces, deletes and lists objects within its prefixes.
    Provider,
    /// Reads `/metrics` and `/api/status`.
    Monitor,
    /// Everything, including users and the configuration.
    Admin,
}

impl Role {
    /// Every role, in the order the table lists them.
    pub const ALL: [Role; 5] = [
        Role::Guest,
        Role::Auditor,
        Role::Provider,
        Role::Monitor,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Guest => "guest",
            Role::Auditor => "auditor",
            Role::Provider => "provider",
            Role::Monitor => "monitor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}; the roles are guest, auditor, provider, monitor, admin"
                )
            })
    }
}

/// A known account, as the request path sees it (no token material).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// Name prefixes a provider is limited to; empty: every name.
    pub prefixes: Vec<String>,
}

impl Account {
    /// Whether `name` (an object name or a listing prefix) is within this account's prefixes.
    pub fn covers(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// Who is asking.
#[derive(Clone, Debug)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A user of the catalog, by one of its tokens.
    User(Arc<Account>),
    /// `[http] api_token`: the built-in admin of set-ups from before accounts.
    ApiToken,
}

impl Principal {
    /// The name the access log and the audit trail record.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "-",
            Principal::User(a) => &a.name,
            Principal::ApiToken => "api_token",
        }
    }

    fn role(&self) -> Option<Role> {
        match self {
            Principal::Anonymous => None,
            Principal::User(a) => Some(a.role),
            Principal::ApiToken => Some(Role::Admin),
        }
    }

    fn covers(&self, name: &str) -> bool {
        match self {
            Principal::User(a) => a.covers(name),
            _ => true,
        }
    }
}

/// Who may read the media under a prefix (`[[access]] read`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPolicy {
    /// Anyone, no credentials.
    Public,
    /// Any known account.
    Token,
    /// A signed link (or an admin, or a provider within its prefixes).
    Signed,
}

impl ReadPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadPolicy::Public => "public",
            ReadPolicy::Token => "token",
            ReadPolicy::Signed => "signed",
        }
    }
}

impl FromStr for ReadPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<ReadPolicy, String> {
        match s {
            "public" => Ok(ReadPolicy::Public),
            "token" => Ok(ReadPolicy::Token),
            "signed" => Ok(ReadPolicy::Signed),
            _ => Err(format!(
                "unknown read policy {s:?}; it is \"public\", \"token\" or \"signed\""
            )),
        }
    }
}

/// What a request asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// `GET|HEAD /media/<name>` under a prefix with this policy.
    Read(&'a str, ReadPolicy),
    /// `PUT` or `DELETE /media/<name>`.
    Write(&'a str),
    /// `DELETE /api/objects?prefix=P`.
    DeletePrefix(&'a str),
    /// `GET /api/objects[?prefix=P]` (empty: every object).
    List(&'a str),
    Status,
    Metrics,
    Audit,
    Users,
    Config,
    Scrub,
}

impl Action<'_> {
    /// A short name for the refusal counter and the audit trail.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Read(..) => "read",
            Action::Write(_) => "write",
            Action::DeletePrefix(_) => "delete_prefix",
            Action::List(_) => "list",
            Action::Status => "status",
            Action::Metrics => "metrics",
            Action::Audit => "audit",
            Action::Users => "users",
            Action::Config => "config",
            Action::Scrub => "scrub",
        }
    }
}

/// The answer: allowed, or refused with the status and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 401: no credentials where some are needed.
    Unauthenticated,
    /// 403: known, not allowed; the text says which role or prefix would be.
    Forbidden(&'static str),
}

/// The settings [`decide`] depends on besides the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct PolicySettings {
    /// `[http] metrics_public`: `/metrics` for anyone.
    pub metrics_public: bool,
}

/// Decides whether `who` may do `what`.
pub fn decide(who: &Principal, what: &Action<'_>, settings: PolicySettings) -> Decision {
    use Role::*;
    match what {
        Action::Read(_, ReadPolicy::Public) => return Decision::Allow,
        Action::Metrics if settings.metrics_public => return Decision::Allow,
        _ => {}
    }
    let Some(role) = who.role() else {
        return Decision::Unauthenticated;
    };
    let refused = match (what, role) {
        (_, Admin) => return Decision::Allow,
        (Action::Read(_, ReadPolicy::Token), _) => return Decision::Allow,
        (Action::Read(name, _), Provider) if who.covers(name) => return Decision::Allow,
        (Action::Read(..), _) => {
            "this object is readable through a signed link only (`oasis sign`), or by an admin or a provider of its prefix"
        }
        (Action::Write(name) | Action::DeletePrefix(name), Provider) if who.covers(name) => {
            return Decision::Allow
        }
        (Action::Write(_) | Action::DeletePrefix(_), Provider) => {
            "this name is outside the prefixes this provider may write"
        }
        (Action::Write(_) | Action::DeletePrefix(_), _) => {
            "uploads and deletes need a provider (within its prefixes) or an admin"
        }
        (Action::List(_), Auditor) => return Decision::Allow,
        (Action::List(prefix), Provider) if who.covers(prefix) => return Decision::Allow,
        (Action::List(_), Provider) => {
            "a provider lists within its prefixes: add ?prefix= with one of them"
        }
        (Action::List(_), _) => "listings need an auditor, a provider or an admin",
        (Action::Status, Auditor | Monitor) => return Decision::Allow,
        (Action::Status, _) => "/api/status needs a monitor, an auditor or an admin",
        (Action::Metrics, Monitor) => return Decision::Allow,
        (Action::Metrics, _) => {
            "/metrics needs a monitor or an admin (or [http] metrics_public = true)"
        }
        (Action::Audit, Auditor) => return Decision::Allow,
        (Action::Audit, _) => "the audit trail needs an auditor or an admin",
        (Action::Users | Action::Config | Action::Scrub, _) => "this needs an admin",
    };
    Decision::Forbidden(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(role: Role, prefixes: &[&str]) -> Principal {
        Principal::User(Arc::new(Account {
            name: format!("{role}"),
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }))
    }

    fn allowed(who: &Principal, what: Action<'_>) -> bool {
        decide(who, &what, PolicySettings::default()) == Decision::Allow
    }

    /// The table of the module doc, row by row.
    #[test]
    fn the_table() {
        let signed = Action::Read("premium/a.mp4", ReadPolicy::Signed);
        let token = Action::Read("members/a.mp4", ReadPolicy::Token);
        let rows: [(Action<'_>, [bool; 5]); 11] = [
            (Action::Read("a", ReadPolicy::Public), [true; 5]),
            (token, [true; 5]),
            (signed, [false, false, true, false, true]),
            (Action::Write("x"), [false, false, true, false, true]),
            (
                Action::DeletePrefix("x/"),
                [false, false, true, false, true],
            ),
            (Action::List(""), [false, true, true, false, true]),
            (Action::Status, [false, true, false, true, true]),
            (Action::Metrics, [false, false, false, true, true]),
            (Action::Audit, [false, true, false, false, true]),
            (Action::Users, [false, false, false, false, true]),
            (Action::Config, [false, false, false, false, true]),
        ];
        for (what, expected) in rows {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(allowed(&user(role, &[]), what), want, "{role} {what:?}");
            }
            assert!(allowed(&Principal::ApiToken, what), "api_token {what:?}");
        }
        assert!(!allowed(&user(Role::Provider, &[]), Action::Scrub));
    }

    #[test]
    fn anonymous_reads_public_media_only() {
        let anon = Principal::Anonymous;
        assert!(allowed(&anon, Action::Read("a", ReadPolicy::Public)));
        for what in [
            Action::Read("a", ReadPolicy::Token),
            Action::Read("a", ReadPolicy::Signed),
            Action::Write("a"),
            Action::Status,
            Action::Metrics,
            Action::Users,
        ] {
            assert_eq!(
                decide(&anon, &what, PolicySettings::default()),
                Decision::Unauthenticated,
                "{what:?}"
            );
        }
        let public_metrics = PolicySettings {
            metrics_public: true,
        };
        assert_eq!(
            decide(&anon, &Action::Metrics, public_metrics),
            Decision::Allow
        );
    }

    #[test]
    fn providers_stay_within_their_prefixes() {
        let news = user(Role::Provider, &["news/", "sport/"]);
        assert!(allowed(&news, Action::Write("news/today.mp4")));
        assert!(allowed(&news, Action::Write("sport/x/index.m3u8")));
        assert!(!allowed(&news, Action::Write("newsroom.mp4")));
        assert!(!allowed(&news, Action::Write("premium/a.mp4")));
        assert!(allowed(&news, Action::DeletePrefix("news/2026/")));
        assert!(!allowed(&news, Action::DeletePrefix("news")));
        assert!(!allowed(&news, Action::DeletePrefix("")));
        assert!(allowed(&news, Action::List("news/")));
        assert!(!allowed(&news, Action::List("")));
        assert!(allowed(
            &news,
            Action::Read("news/a.mp4", ReadPolicy::Signed)
        ));
        assert!(!allowed(
            &news,
            Action::Read("premium/a.mp4", ReadPolicy::Signed)
        ));
        let Decision::Forbidden(why) = decide(&news, &Action::List(""), PolicySettings::default())
        else {
            panic!("a provider listing everything is refused");
        };
        assert!(why.contains("?prefix="), "{why}");
    }

    #[test]
    fn roles_parse_and_print_the_same() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("guest, auditor"));
        assert_eq!("signed".parse::<ReadPolicy>(), Ok(ReadPolicy::Signed));
        assert!("private".parse::<ReadPolicy>().is_err());
    }
}
