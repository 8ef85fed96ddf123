//! The User Manager's in-memory index: token hash to account, read by every request that carries
//! a token, replaced whole when an account changes (on the catalog thread, never on a worker).
//!
//! Tokens are looked up by their SHA-256, so the comparison a lookup makes is between hashes of
//! secrets: how long it takes says nothing useful about the token. The hash found is still
//! compared in constant time with the one computed, as a second check. An account holds up to two
//! tokens (its current one and, during a rotation, the previous one); both map to the account.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::policy::Account;
use super::token;

/// One account with its token hashes, as the catalog holds it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub account: Account,
    pub token_hash: [u8; 32],
    pub old_token_hash: Option<[u8; 32]>,
}

#[derive(Default)]
struct Index {
    by_hash: HashMap<[u8; 32], Arc<Account>>,
    accounts: usize,
}

/// Every account, shared by every worker and every configuration generation.
#[derive(Default)]
pub struct Users {
    index: RwLock<Arc<Index>>,
}

impl Users {
    /// Puts `entries` in force, replacing every account known before.
    pub fn replace_all(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut index = Index::default();
        for e in entries {
            let account = Arc::new(e.account);
            index.accounts += 1;
            index.by_hash.insert(e.token_hash, Arc::clone(&account));
            if let Some(old) = e.old_token_hash {
                index.by_hash.insert(old, account);
            }
        }
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
    }

    /// The account holding `token`, if any.
    pub fn find(&self, token: &str) -> Option<Arc<Account>> {
        if !token::looks_like_token(token) {
            return None;
        }
        let hash = token::hash(token);
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let (stored, account) = index.by_hash.get_key_value(&hash)?;
        token::ct_eq(stored, &hash).then(|| Arc::clone(account))
    }

    /// How many accounts there are.
    pub fn len(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .accounts
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::Role;
    use super::*;

    fn entry(name: &str, role: Role, token: &str, old: Option<&str>) -> Entry {
        Entry {
            account: Account {
                name: name.into(),
                role,
                prefixes: Vec::new(),
            },
            token_hash: token::hash(token),
            old_token_hash: old.map(token::hash),
        }
    }

    #[test]
    fn both_tokens_of_a_rotation_find_the_account() {
        let users = Users::default();
        let (a, b, c) = (token::generate(), token::generate(), token::generate());
        users.replace_all([
            entry("ann", Role::Admin, &a, Some(&b)),
            entry("bob", Role::Guest, &c, None),
        ]);
        assert_eq!(users.len(), 2);
        assert_eq!(users.find(&a).unwrap().name, "ann");
        assert_eq!(users.find(&b).unwrap().name, "ann");
        assert_eq!(users.find(&c).unwrap().role, Role::Guest);
        assert!(users.find(&token::generate()).is_none());
        assert!(users.find("not a token").is_none());
        // The rotation ends: the old token no longer works.
        users.replace_all([entry("ann", Role::Admin, &a, None)]);
        assert!(users.find(&b).is_none());
        assert!(users.find(&c).is_none());
        assert_eq!(users.len(), 1);
    }
}
