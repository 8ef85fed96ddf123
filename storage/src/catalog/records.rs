//! The catalog's records of the User Manager and the Log Manager: user accounts and the audit
//! trail, as plain data.
//!
//! Storage keeps these records and answers queries on them; it does not judge them. A role is
//! opaque text here, a token arrives already hashed, and what an action or outcome means is the
//! caller's business. This module holds no I/O and no policy, only the shapes and their limits.

/// Most text bytes kept per [`AuditRecord`] field; a longer value is cut at a character boundary
/// when the record is stored.
pub const AUDIT_TEXT_BYTES_MAX: usize = 2048;

/// Most records one [`AuditQuery`] returns, whatever its `limit` says.
pub const AUDIT_QUERY_LIMIT_MAX: usize = 10_000;

/// A user account as stored. `role` is opaque text to storage (the User Manager validates it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// The account name; the key of the record.
    pub name: String,
    /// The account's role, as the User Manager names it.
    pub role: String,
    /// Object-name prefixes a provider is limited to (empty: no limit / not a provider).
    pub prefixes: Vec<String>,
    /// SHA-256 of the current token.
    pub token_hash: [u8; 32],
    /// SHA-256 of the previous token during a rotation (`None`: only one token).
    pub old_token_hash: Option<[u8; 32]>,
    /// When the account was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// When the account last changed, milliseconds since the Unix epoch.
    pub updated_unix_ms: u64,
}

/// One line of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the catalog on append (ascending, never reused); 0 before it is stored.
    pub seq: u64,
    /// When the action happened, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Account name, "-" when none (anonymous), "api_token" for the built-in admin.
    pub user: String,
    /// Client address as text ("127.0.0.1:5000" or just an IP; "-" for the CLI offline).
    pub client: String,
    /// e.g. "upload", "replace", "delete", "delete_prefix", "user_add", "user_rm", "user_rotate",
    /// "user_revoke", "config_patch", "auth_refused".
    pub action: String,
    /// Object name, user name or config keys the action was about ("" when none).
    pub object: String,
    /// "ok", "refused", "error", ... (free text, short).
    pub outcome: String,
    /// Free text, short (e.g. the HTTP status, the reason).
    pub detail: String,
}

/// Which audit records [`crate::Catalog::query_audit`] returns: those matching every filter
/// given, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only records with `at_unix_ms >= since_unix_ms`.
    pub since_unix_ms: Option<u64>,
    /// Only records of this user (exact match).
    pub user: Option<String>,
    /// Only records of this action (exact match).
    pub action: Option<String>,
    /// Only records with seq > after_seq (pagination cursor).
    pub after_seq: Option<u64>,
    /// At most this many, oldest first (ascending seq). Callers cap it; storage caps at
    /// [`AUDIT_QUERY_LIMIT_MAX`] too. 0 returns nothing.
    pub limit: usize,
}

/// `text` cut to at most [`AUDIT_TEXT_BYTES_MAX`] bytes, at a character boundary.
pub(crate) fn audit_text(text: &str) -> &str {
    if text.len() <= AUDIT_TEXT_BYTES_MAX {
        return text;
    }
    let mut end = AUDIT_TEXT_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_cuts_at_a_character_boundary() {
        assert_eq!(audit_text("short"), "short");
        let exact = "a".repeat(AUDIT_TEXT_BYTES_MAX);
        assert_eq!(audit_text(&exact), exact);
        // A two-byte character straddling the limit is left out whole.
        let straddling = format!("{}é", "a".repeat(AUDIT_TEXT_BYTES_MAX - 1));
        assert_eq!(
            audit_text(&straddling),
            "a".repeat(AUDIT_TEXT_BYTES_MAX - 1)
        );
        let long = "é".repeat(AUDIT_TEXT_BYTES_MAX);
        let cut = audit_text(&long);
        assert_eq!(cut.len(), AUDIT_TEXT_BYTES_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
