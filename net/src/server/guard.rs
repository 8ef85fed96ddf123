//! Who a request comes from, and the refusals of the User Manager ([`Denied`]) with the response
//! that says why. The decision itself is [`crate::auth::policy::decide`]; this file turns an
//! `Authorization` header into a [`Principal`] and a refusal into bytes. Pure: no clock, no
//! counters (the session counts).

use std::borrow::Cow;

use super::reply::json_escape;
use crate::auth::link::LinkError;
use crate::auth::policy::Principal;
use crate::auth::token;
use crate::auth::users::Users;
use crate::http::ResponseHead;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Denied {
    /// The server has no accounts and no `[http] api_token`: nothing can authenticate (403).
    NoAccounts,
    NoCredentials,
    NotBearer,
    /// A bearer token no account holds (mistyped, revoked or rotated out).
    UnknownToken,
    /// Known, not allowed (403), with the rule that refused.
    Forbidden(&'static str),
    /// Too many failed authentications from this address: 429, retry after this many seconds.
    Throttled(u64),
    /// A signed link that does not open: 403, or 410 once expired.
    Link(LinkError),
    /// A signed link to a server without `[links] keys` (403).
    LinksOff,
}

impl Denied {
    pub(super) fn status(self) -> u16 {
        match self {
            Denied::NoAccounts | Denied::Forbidden(_) | Denied::LinksOff => 403,
            Denied::Link(e) => e.status(),
            Denied::Throttled(_) => 429,
            Denied::NoCredentials | Denied::NotBearer | Denied::UnknownToken => 401,
        }
    }

    /// The label of `oasis_auth_refused_total` and the audit trail's outcome.
    pub(super) fn label(self) -> &'static str {
        match self {
            Denied::NoAccounts => "no_accounts",
            Denied::NoCredentials => "no_credentials",
            Denied::NotBearer => "not_bearer",
            Denied::UnknownToken => "unknown_token",
            Denied::Forbidden(_) => "forbidden",
            Denied::Throttled(_) => "throttled",
            Denied::Link(LinkError::Malformed) => "link_malformed",
            Denied::Link(LinkError::BadSignature) => "link_bad_signature",
            Denied::Link(LinkError::Expired) => "link_expired",
            Denied::Link(LinkError::WrongAddress) => "link_wrong_address",
            Denied::LinksOff => "links_off",
        }
    }

    /// Whether this counts as a failed authentication of the client's address.
    pub(super) fn is_failure(self) -> bool {
        matches!(
            self,
            Denied::NotBearer
                | Denied::UnknownToken
                | Denied::Link(LinkError::Malformed | LinkError::BadSignature)
        )
    }

    /// What the refused client is told (the `error` of the JSON body).
    pub(super) fn reason(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Denied::NoAccounts => {
                "this server has no accounts and no API token, so it refuses uploads, deletes \
                 and /api; create an admin with `oasis user add NAME --role admin` (it prints \
                 the token), or set [http] api_token (16 characters or more) in its \
                 configuration file and reload it (SIGHUP), or restart it with OASIS_API_TOKEN set"
            }
            Denied::NoCredentials => {
                "this request needs credentials: send `Authorization: Bearer <token>` with a \
                 token from `oasis user add` (oasis CLI: --token or OASIS_API_TOKEN)"
            }
            Denied::NotBearer => "only `Authorization: Bearer <token>` is accepted",
            Denied::UnknownToken => {
                "the bearer token is not known to this server (mistyped, revoked or rotated out)"
            }
            Denied::Forbidden(why) => why,
            Denied::Link(e) => e.reason(),
            Denied::LinksOff => {
                "this server has no signing keys, so it opens no signed links; set [links] keys"
            }
            Denied::Throttled(secs) => {
                return Cow::Owned(format!(
                    "too many failed authentications from this address; retry in {secs} s"
                ))
            }
        })
    }
}

/// The principal an `Authorization` header names: `api_token` (the built-in admin) or an
/// account's token; no header is [`Principal::Anonymous`].
pub(super) fn principal(
    api_token: Option<&str>,
    users: &Users,
    authorization: Option<&str>,
) -> Result<Principal, Denied> {
    let Some(given) = authorization else {
        return Ok(Principal::Anonymous);
    };
    if api_token.is_none() && users.is_empty() {
        // Nothing could match: the server is the side to fix, not the client's token.
        return Err(Denied::NoAccounts);
    }
    let Some(given) = given.strip_prefix("Bearer ") else {
        return Err(Denied::NotBearer);
    };
    let given = given.trim();
    if let Some(t) = api_token {
        if token::ct_eq(given.as_bytes(), t.as_bytes()) {
            return Ok(Principal::ApiToken);
        }
    }
    users
        .find(given)
        .map(Principal::User)
        .ok_or(Denied::UnknownToken)
}

/// The refusal's response, with a JSON body that says why and what to do; and its body length
/// sent.
pub(super) fn denied(why: Denied, head_only: bool, date: &str, keep_alive: bool) -> (Vec<u8>, u64) {
    let status = why.status();
    let msg = format!("{{\"error\":{}}}\n", json_escape(&why.reason()));
    let mut out = Vec::with_capacity(384 + msg.len());
    let mut head = ResponseHead::new(&mut out, status, date);
    head.content_type("application/json")
        .content_length(msg.len() as u64);
    if status == 401 {
        head.header("WWW-Authenticate", "Bearer realm=\"oasis\"");
    }
    if let Denied::Throttled(secs) = why {
        head.header("Retry-After", &secs.to_string());
    }
    head.cors().connection(keep_alive);
    head.finish();
    if head_only {
        return (out, 0);
    }
    out.extend_from_slice(msg.as_bytes());
    (out, msg.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::policy::{Account, Role};
    use crate::auth::users::Entry;

    #[test]
    fn refusals_say_which_side_to_fix() {
        assert_eq!(Denied::NoAccounts.status(), 403);
        let server_side = Denied::NoAccounts.reason();
        assert!(server_side.contains("oasis user add") && server_side.contains("OASIS_API_TOKEN"));
        assert!(!server_side.contains("--token"), "{server_side}");
        for client_side in [
            Denied::NoCredentials,
            Denied::NotBearer,
            Denied::UnknownToken,
        ] {
            assert_eq!(client_side.status(), 401);
            assert!(client_side.is_failure() || client_side == Denied::NoCredentials);
        }
        assert!(Denied::NoCredentials
            .reason()
            .contains("Authorization: Bearer"));
        assert_eq!(Denied::Throttled(7).status(), 429);
        let (out, _) = denied(Denied::Throttled(7), false, "d", true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Retry-After: 7\r\n"), "{text}");
        assert!(text.contains("retry in 7 s"), "{text}");
    }

    #[test]
    fn the_api_token_and_account_tokens_authenticate() {
        let users = Users::default();
        let t = token::generate();
        users.replace_all([Entry {
            account: Account {
                name: "ann".into(),
                role: Role::Monitor,
                prefixes: vec![],
            },
            token_hash: token::hash(&t),
            old_token_hash: None,
        }]);
        let api = Some("0123456789abcdef");
        let p = |auth: Option<&str>| principal(api, &users, auth);
        assert!(matches!(p(None), Ok(Principal::Anonymous)));
        assert!(matches!(
            p(Some("Bearer 0123456789abcdef")),
            Ok(Principal::ApiToken)
        ));
        let bearer = format!("Bearer {t}");
        assert!(matches!(p(Some(&bearer)), Ok(Principal::User(a)) if a.name == "ann"));
        assert_eq!(p(Some("Basic abc")).unwrap_err(), Denied::NotBearer);
        assert_eq!(
            p(Some("Bearer 0123456789abcde")).unwrap_err(),
            Denied::UnknownToken
        );
        assert_eq!(
            principal(None, &users, Some("Bearer 0123456789abcdef")).unwrap_err(),
            Denied::UnknownToken
        );
        let nobody = Users::default();
        assert_eq!(
            principal(None, &nobody, Some("Bearer 0123456789abcdef")).unwrap_err(),
            Denied::NoAccounts
        );
    }
}
