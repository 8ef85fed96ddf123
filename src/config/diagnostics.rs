//! Configuration diagnostics: what is wrong, where in the file, and what to write instead.
//!
//! A [`Diagnostic`] names the key as the operator reads it (`[engine] chunk_bytes`), its line and
//! column when the key is in the file, and a hint. This module turns byte offsets into positions,
//! derives a hint for a TOML syntax error from the offending line, and finds the key an unknown
//! one was probably meant to be. It reads no files and no environment.

use std::fmt;

/// A place in the text: line and column, both from 1; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to the text).
    pub fn at(text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

/// One problem in a configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Where in the file; `None` when the value is not in the file (a default or a command-line
    /// option) or the problem is not about the file (the environment).
    pub at: Option<Position>,
    /// The key as the operator reads it, e.g. `[engine] chunk_bytes`; empty for a syntax error.
    pub key: String,
    pub message: String,
    /// What to write instead, when there is something to say.
    pub hint: Option<String>,
}

/// Every problem found in one configuration, printed one per line with an indented `hint:` line
/// under each that has one, then a count.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The file the positions are in; `None`: the configuration in force (file, defaults and
    /// command-line options together).
    pub origin: Option<String>,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.items {
            match (&self.origin, d.at) {
                (Some(origin), Some(at)) => write!(f, "{origin}:{}:{}: ", at.line, at.column)?,
                (Some(origin), None) => write!(f, "{origin}: ")?,
                (None, _) => {}
            }
            if !d.key.is_empty() {
                write!(f, "{}: ", d.key)?;
            }
            writeln!(f, "{}", d.message)?;
            if let Some(hint) = &d.hint {
                writeln!(f, "  hint: {hint}")?;
            }
        }
        let n = self.items.len();
        let origin = self.origin.as_deref().unwrap_or("the configuration");
        write!(f, "{n} error{} in {origin}", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// The candidate most like `word`, if any is alike enough to be what was meant.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|&(similarity, _)| similarity >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A diagnostic for text that is not TOML. `span` is where the parser stopped.
pub fn syntax(text: &str, offset: usize, message: &str) -> Diagnostic {
    Diagnostic {
        at: Some(Position::at(text, offset)),
        key: String::new(),
        message: format!("not valid TOML: {}", message.trim().replace('\n', "; ")),
        hint: Some(syntax_hint(text, offset, message).unwrap_or_else(|| {
            "see oasis.toml at the top of the Oasis repository: every key with its default".into()
        })),
    }
}

/// A hint for a syntax error, from the line it is on.
fn syntax_hint(text: &str, offset: usize, message: &str) -> Option<String> {
    let at = Position::at(text, offset);
    let lines: Vec<&str> = text.lines().collect();
    let line = lines.get(at.line - 1).copied().unwrap_or("").trim();
    if let Some(key) = between_backticks(message).filter(|_| message.contains("duplicate key")) {
        return Some(duplicate_hint(&lines[..at.line.min(lines.len()) - 1], key));
    }
    if line.starts_with('[') {
        return Some(
            "a section header is a name in brackets on a line of its own, e.g. [engine] (and [[listen]] for each address)"
                .into(),
        );
    }
    let Some((key, value)) = line.split_once('=') else {
        return Some(format!(
            "a line holds a [section] header, a key = value pair or a # comment; `{line}` needs = and a value"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    if key.split_whitespace().count() > 1 {
        return Some(format!(
            "a key is one word: {}",
            key.split_whitespace().collect::<Vec<_>>().join("_")
        ));
    }
    let unquoted = value.split('#').next().unwrap_or("").trim();
    let first = value.chars().next()?;
    Some(match first {
        '"' | '\'' if message.contains("string") => {
            format!("a string ends with the quote it starts with, on the same line: {key} = \"...\"")
        }
        '"' | '\'' => "after a value a line may hold only a # comment".into(),
        '[' => "a list is values separated by commas inside [ ], e.g. cores = [0, 1]".into(),
        '{' => "an inline table is { key = value, ... } on one line".into(),
        c if c.is_ascii_digit() || c == '-' || c == '+' => format!(
            "a number is plain digits, without a unit: write it in the unit the key's name gives (_bytes, _secs, _bps), e.g. {key} = 1048576"
        ),
        _ => match unquoted.to_ascii_lowercase().as_str() {
            "yes" | "on" | "true" => format!("true and false are written lowercase, without quotes: {key} = true"),
            "no" | "off" | "false" => format!("true and false are written lowercase, without quotes: {key} = false"),
            _ => format!("strings need quotes: {key} = \"{unquoted}\""),
        },
    })
}

/// Where the first of two `key`s is: a `[key]` header or a `key = ` line in `before` (the lines
/// above the second one), the nearest first.
fn duplicate_hint(before: &[&str], key: &str) -> String {
    let header = |l: &str| {
        let l = l.trim();
        l == format!("[{key}]") || l == format!("[[{key}]]")
    };
    if let Some(n) = before.iter().rposition(|l| header(l)) {
        return format!(
            "[{key}] is already opened on line {}: keep one [{key}] header with all its keys under it",
            n + 1
        );
    }
    let assigns = |l: &str| l.split_once('=').is_some_and(|(k, _)| k.trim() == key);
    match before.iter().rposition(|l| assigns(l)) {
        Some(n) => format!(
            "`{key}` is already set on line {}: keep one of the two",
            n + 1
        ),
        None => format!("`{key}` is given twice: keep one of the two"),
    }
}

fn between_backticks(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once('`')?;
    Some(rest.split_once('`')?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(text: &str) -> String {
        let err = toml_edit::ImDocument::parse(text).unwrap_err();
        let d = syntax(text, err.span().unwrap().start, err.message());
        d.hint.unwrap()
    }

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(Position::at(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::at(text, 6), Position { line: 2, column: 1 });
        let eq = text.find("= \"x").unwrap();
        assert_eq!(Position::at(text, eq), Position { line: 2, column: 4 });
        assert_eq!(Position::at(text, 1000).line, 3);
    }

    #[test]
    fn syntax_hints_come_from_the_offending_line() {
        assert_eq!(
            hint("[server]\nlog_level = info\n"),
            "strings need quotes: log_level = \"info\""
        );
        assert_eq!(
            hint("[engine]\nlayout = combined # the default\n"),
            "strings need quotes: layout = \"combined\""
        );
        assert!(hint("[engine]\npin = yes\n").ends_with("pin = true"));
        assert!(hint("[server]\nlog_level\n").contains("`log_level` needs = and a value"));
        assert!(hint("[server\n").contains("[engine]"));
        assert_eq!(
            hint("[server]\ndata dir = \"x\"\n"),
            "a key is one word: data_dir"
        );
        assert!(hint("[engine]\nchunk_bytes = 256KiB\n").contains("without a unit"));
        assert!(hint("[server]\nlog_level = \"info\n").contains("ends with the quote"));
    }

    #[test]
    fn a_duplicate_names_the_line_of_the_first() {
        assert_eq!(
            hint("[server]\ndata_dir = \"a\"\nlog_level = \"info\"\ndata_dir = \"b\"\n"),
            "`data_dir` is already set on line 2: keep one of the two"
        );
        assert!(hint("[server]\n\n[engine]\n[server]\n")
            .starts_with("[server] is already opened on line 1"));
    }

    #[test]
    fn closest_suggests_only_what_is_alike() {
        let keys = ["data_dir", "drain_timeout_secs", "log_level"];
        assert_eq!(closest("data_dri", keys), Some("data_dir"));
        assert_eq!(closest("loglevel", keys), Some("log_level"));
        assert_eq!(closest("bandwidth", keys), None);
        assert_eq!(
            closest("chunk_size", ["chunk_bytes", "pin", "layout"]),
            Some("chunk_bytes")
        );
    }

    #[test]
    fn diagnostics_print_one_per_line_with_hints_and_a_count() {
        let d = Diagnostics {
            origin: Some("o.toml".into()),
            items: vec![
                Diagnostic {
                    at: Some(Position { line: 3, column: 1 }),
                    key: "[server] data_dri".into(),
                    message: "unknown key".into(),
                    hint: Some("did you mean `data_dir`?".into()),
                },
                Diagnostic {
                    at: None,
                    key: "[engine] layout".into(),
                    message: "bad".into(),
                    hint: None,
                },
            ],
        };
        assert_eq!(
            d.to_string(),
            "o.toml:3:1: [server] data_dri: unknown key\n  hint: did you mean `data_dir`?\no.toml: [engine] layout: bad\n2 errors in o.toml"
        );
    }
}
