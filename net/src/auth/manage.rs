//! Account changes: add, remove, rotate, revoke the old token, list. The same functions serve
//! `oasis user ...` offline (on a data directory) and `/api/users` (in a job on the catalog
//! thread): they write the catalog through the store and never run on a worker. After a change
//! through the API the caller reloads the in-memory index ([`load_index`]).

use std::fmt;
use std::str::FromStr;

use oasis_storage::{AuditRecord, Store, StoreError, UserRecord};

use super::policy::{Account, Role};
use super::token;
use super::users::{Entry, Users};

/// Longest account name, bytes.
pub const USER_NAME_BYTES_MAX: usize = 64;
/// Most prefixes one provider may hold.
pub const PREFIXES_MAX: usize = 64;

/// Why an account change did not happen.
#[derive(Debug)]
pub enum UserError {
    /// Bad input: the text says what (400).
    Invalid(String),
    NotFound(String),
    Exists(String),
    /// `revoke --old` with no rotation under way.
    NoOldToken(String),
    Store(StoreError),
}

impl UserError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            UserError::Invalid(_) => 400,
            UserError::NotFound(_) => 404,
            UserError::Exists(_) | UserError::NoOldToken(_) => 409,
            UserError::Store(_) => 500,
        }
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Invalid(why) => f.write_str(why),
            UserError::NotFound(n) => write!(f, "there is no user {n:?}"),
            UserError::Exists(n) => write!(
                f,
                "user {n:?} exists; `oasis user rotate {n}` gives it a new token"
            ),
            UserError::NoOldToken(n) => write!(
                f,
                "user {n:?} holds one token only: there is no old token to revoke (rotate first)"
            ),
            UserError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UserError {}

impl From<StoreError> for UserError {
    fn from(e: StoreError) -> UserError {
        UserError::Store(e)
    }
}

/// Checks an account name: 1 to 64 bytes of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter
/// or digit (it appears in URLs, log lines and the audit trail as it is).
pub fn validate_user_name(name: &str) -> Result<(), UserError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    let starts_well = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty()
        || name.len() > USER_NAME_BYTES_MAX
        || !starts_well
        || !name.chars().all(ok_char)
    {
        return Err(UserError::Invalid(format!(
            "user name {name:?} is not valid: 1 to {USER_NAME_BYTES_MAX} characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        )));
    }
    Ok(())
}

/// Checks a provider's prefixes: valid object-name starts, at most [`PREFIXES_MAX`], and only for
/// providers.
fn check_prefixes(role: Role, prefixes: &[String]) -> Result<(), UserError> {
    if !prefixes.is_empty() && role != Role::Provider {
        return Err(UserError::Invalid(format!(
            "only providers are limited to prefixes; a {role} may not take --prefix"
        )));
    }
    if prefixes.len() > PREFIXES_MAX {
        return Err(UserError::Invalid(format!(
            "at most {PREFIXES_MAX} prefixes per provider"
        )));
    }
    for p in prefixes {
        // A prefix is the start of a name: as a name, with something after it, it must be valid.
        if p.is_empty() || oasis_storage::validate_name(&format!("{p}x")).is_err() {
            return Err(UserError::Invalid(format!(
                "prefix {p:?} is not the start of a valid object name (e.g. \"news/\")"
            )));
        }
    }
    Ok(())
}

/// The account of a stored record, for the index; `None` (and a warning) for a role this
/// version does not know.
pub fn account_of(rec: &UserRecord) -> Option<Account> {
    match Role::from_str(&rec.role) {
        Ok(role) => Some(Account {
            name: rec.name.clone(),
            role,
            prefixes: rec.prefixes.clone(),
        }),
        Err(e) => {
            tracing::warn!("user {:?} is ignored: {e}", rec.name);
            None
        }
    }
}

/// Loads every account of the catalog into `users`; returns how many.
pub fn load_index(store: &Store, users: &Users) -> Result<usize, UserError> {
    let records = store.users()?;
    let entries: Vec<Entry> = records
        .iter()
        .filter_map(|r| {
            Some(Entry {
                account: account_of(r)?,
                token_hash: r.token_hash,
                old_token_hash: r.old_token_hash,
            })
        })
        .collect();
    let n = entries.len();
    users.replace_all(entries);
    Ok(n)
}

/// Every account, by name.
pub fn list(store: &Store) -> Result<Vec<UserRecord>, UserError> {
    let mut all = store.users()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

fn find(store: &Store, name: &str) -> Result<UserRecord, UserError> {
    validate_user_name(name)?;
    store
        .users()?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| UserError::NotFound(name.to_string()))
}

/// Adds an account; returns it and its token (shown once, stored only as a hash).
pub fn add(
    store: &Store,
    name: &str,
    role: Role,
    prefixes: Vec<String>,
    now_ms: u64,
) -> Result<(UserRecord, String), UserError> {
    validate_user_name(name)?;
    check_prefixes(role, &prefixes)?;
    if store.users()?.iter().any(|u| u.name == name) {
        return Err(UserError::Exists(name.to_string()));
    }
    let token = token::generate();
    let rec = UserRecord {
        name: name.to_string(),
        role: role.as_str().to_string(),
        prefixes,
        token_hash: token::hash(&token),
        old_token_hash: None,
        created_unix_ms: now_ms,
        updated_unix_ms: now_ms,
    };
    store.put_user(&rec)?;
    Ok((rec, token))
}

/// Removes an account; its tokens stop working at once.
pub fn remove(store: &Store, name: &str) -> Result<UserRecord, UserError> {
    validate_user_name(name)?;
    store
        .remove_user(name)?
        .ok_or_else(|| UserError::NotFound(name.to_string()))
}

/// Gives an account a new token; the current one keeps working as the old token until
/// [`revoke_old`] (a rotation). Returns the new token.
pub fn rotate(store: &Store, name: &str, now_ms: u64) -> Result<String, UserError> {
    let mut rec = find(store, name)?;
    let token = token::generate();
    rec.old_token_hash = Some(rec.token_hash);
    rec.token_hash = token::hash(&token);
    rec.updated_unix_ms = now_ms;
    store.put_user(&rec)?;
    Ok(token)
}

/// Ends a rotation: the old token stops working.
pub fn revoke_old(store: &Store, name: &str, now_ms: u64) -> Result<(), UserError> {
    let mut rec = find(store, name)?;
    if rec.old_token_hash.take().is_none() {
        return Err(UserError::NoOldToken(name.to_string()));
    }
    rec.updated_unix_ms = now_ms;
    store.put_user(&rec)?;
    Ok(())
}

/// An account as the API and `oasis user ls` show it: never its token hashes.
pub fn user_json(rec: &UserRecord) -> serde_json::Value {
    serde_json::json!({
        "name": rec.name,
        "role": rec.role,
        "prefixes": rec.prefixes,
        "rotating": rec.old_token_hash.is_some(),
        "created_unix_ms": rec.created_unix_ms,
        "updated_unix_ms": rec.updated_unix_ms,
    })
}

/// An audit record as `GET /api/audit` and `oasis audit` show it.
pub fn audit_json(r: &AuditRecord) -> serde_json::Value {
    serde_json::json!({
        "seq": r.seq, "at_unix_ms": r.at_unix_ms, "user": r.user, "client": r.client,
        "action": r.action, "object": r.object, "outcome": r.outcome, "detail": r.detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_are_checked() {
        for good in ["ann", "news-bot", "a.b_c", "0"] {
            assert!(validate_user_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Ann", "-x", "a b", "a/b", "ä", long.as_str()] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_prefixes(Role::Provider, &p(&["news/", "sport"])).is_ok());
        assert!(check_prefixes(Role::Provider, &p(&[""])).is_err());
        assert!(check_prefixes(Role::Provider, &p(&["../x"])).is_err());
        let err = check_prefixes(Role::Guest, &p(&["news/"])).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.to_string().contains("only providers"), "{err}");
    }
}
