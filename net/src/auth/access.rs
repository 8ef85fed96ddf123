//! Per-prefix access rules (`[[access]]` in the configuration): who may read the media under a
//! name prefix, and the `Cache-Control` its responses carry. The longest matching prefix wins;
//! names under no rule take the default rule (from `[http] public_reads`).

use super::policy::ReadPolicy;

/// One `[[access]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRule {
    /// Name prefix ("premium/"); empty matches every name.
    pub prefix: String,
    pub read: ReadPolicy,
    /// The `Cache-Control` of media responses under the prefix; `None`: the read policy's
    /// default ([`AccessRule::cache_control`]).
    pub cache_control: Option<String>,
}

impl AccessRule {
    /// The `Cache-Control` of responses under this rule: the configured one, else none for
    /// public media and `private` for media that needs credentials (a shared cache must not keep
    /// it for others).
    pub fn cache_control(&self) -> Option<&str> {
        match (&self.cache_control, self.read) {
            (Some(c), _) if c.is_empty() => None,
            (Some(c), _) => Some(c),
            (None, ReadPolicy::Public) => None,
            (None, _) => Some("private"),
        }
    }
}

/// Every rule, looked up by object name.
#[derive(Clone, Debug)]
pub struct AccessRules {
    /// Longest prefix first, so the first match is the longest.
    rules: Vec<AccessRule>,
    default: AccessRule,
}

impl AccessRules {
    /// `rules` in any order (prefixes must be distinct: the configuration check says so);
    /// `default_read` applies where no rule matches.
    pub fn new(mut rules: Vec<AccessRule>, default_read: ReadPolicy) -> AccessRules {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        AccessRules {
            rules,
            default: AccessRule {
                prefix: String::new(),
                read: default_read,
                cache_control: None,
            },
        }
    }

    /// The rule in force for `name`.
    pub fn rule_for(&self, name: &str) -> &AccessRule {
        self.rules
            .iter()
            .find(|r| name.starts_with(r.prefix.as_str()))
            .unwrap_or(&self.default)
    }

    /// Whether some name needs a signed link (so `/s/` links are worth checking at all).
    pub fn any_signed(&self) -> bool {
        self.default.read == ReadPolicy::Signed
            || self.rules.iter().any(|r| r.read == ReadPolicy::Signed)
    }
}

impl Default for AccessRules {
    fn default() -> Self {
        AccessRules::new(Vec::new(), ReadPolicy::Public)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(prefix: &str, read: ReadPolicy, cc: Option<&str>) -> AccessRule {
        AccessRule {
            prefix: prefix.into(),
            read,
            cache_control: cc.map(Into::into),
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let rules = AccessRules::new(
            vec![
                rule("premium/", ReadPolicy::Signed, None),
                rule("premium/trailers/", ReadPolicy::Public, Some("max-age=600")),
                rule("members/", ReadPolicy::Token, None),
            ],
            ReadPolicy::Public,
        );
        assert_eq!(rules.rule_for("premium/a.mp4").read, ReadPolicy::Signed);
        let trailer = rules.rule_for("premium/trailers/a.mp4");
        assert_eq!(trailer.read, ReadPolicy::Public);
        assert_eq!(trailer.cache_control(), Some("max-age=600"));
        assert_eq!(rules.rule_for("members/x").read, ReadPolicy::Token);
        assert_eq!(rules.rule_for("premiumx").read, ReadPolicy::Public);
        assert!(rules.any_signed());
        assert!(!AccessRules::default().any_signed());
    }

    #[test]
    fn private_media_is_private_to_caches_unless_configured() {
        assert_eq!(rule("a/", ReadPolicy::Public, None).cache_control(), None);
        assert_eq!(
            rule("a/", ReadPolicy::Token, None).cache_control(),
            Some("private")
        );
        assert_eq!(
            rule("a/", ReadPolicy::Signed, Some("private, max-age=60")).cache_control(),
            Some("private, max-age=60")
        );
        assert_eq!(
            rule("a/", ReadPolicy::Signed, Some("")).cache_control(),
            None
        );
    }
}
