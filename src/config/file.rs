//! Reading a configuration file: every unknown key, wrong type and failing value in one pass, each
//! located in the file.
//!
//! The text is parsed twice by the same TOML parser: as a `toml_edit` document for positions and as
//! a `toml::Table` for values. Each key is tried alone against the defaults of every other key, so
//! a wrong type is pinned to its key; the keys that pass make up the [`Config`] (a key that fails
//! keeps its default), whose value checks then run and are located through the document. Past a
//! syntax error there is nothing to walk: that is the one diagnostic.

use std::ops::Range;

use toml_edit::{ImDocument, Item, TableLike};

use super::check::Key;
use super::diagnostics::{closest, syntax, Diagnostic, Diagnostics, Position};
use super::Config;

/// Keys with no default (an `Option` that the defaults do not write), by section.
const KEYS_WITHOUT_DEFAULT: &[(&str, &str)] = &[("http", "api_token"), ("access", "cache_control")];

/// The sections that are arrays of tables, with the key each of their tables must have.
const TABLE_ARRAYS: &[(&str, &str, &str)] = &[
    (
        "listen",
        "addr",
        "addr = \"127.0.0.1:8080\" (an IP address and a port)",
    ),
    (
        "access",
        "prefix",
        "prefix = \"premium/\" (the start of the object names it rules)",
    ),
];

/// Reads `text` (from `origin`, a file name for the messages) into a checked [`Config`].
pub fn read(text: &str, origin: &str) -> Result<Config, Diagnostics> {
    let fail = |items| Diagnostics {
        origin: Some(origin.to_string()),
        items,
    };
    let doc = ImDocument::parse(text).map_err(|e| {
        let at = e.span().map_or(text.len(), |s| s.start);
        fail(vec![syntax(text, at, e.message())])
    })?;
    let values: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map_or(text.len(), |s| s.start);
        fail(vec![syntax(text, at, e.message())])
    })?;
    let mut walk = Walk {
        defaults: defaults(),
        good: toml::Table::new(),
        in_file: Vec::new(),
        found: Vec::new(),
        reported: Vec::new(),
    };
    for (name, item) in doc.iter() {
        let key_at = doc.as_table().key(name).and_then(|k| k.span());
        walk.top(name, item, values.get(name).unwrap_or(&NONE), key_at);
    }
    let cfg = match toml::Value::Table(std::mem::take(&mut walk.good)).try_into::<Config>() {
        Ok(cfg) => Some(cfg),
        Err(e) => {
            // Not expected (each key passed alone), but if it happens, in the deserializer's words.
            walk.found.push((
                None,
                Diagnostic {
                    at: None,
                    key: String::new(),
                    message: e.message().to_string(),
                    hint: None,
                },
            ));
            None
        }
    };
    if let Some(cfg) = &cfg {
        for problem in cfg.problems() {
            if walk.reported.iter().any(|r| r.covers(&problem.key)) {
                continue; // its value is a default standing in for one already reported
            }
            let span = walk.locate(&doc, &problem.key);
            walk.found.push((span, problem.diagnostic()));
        }
    }
    if walk.found.is_empty() {
        return Ok(cfg.expect("no diagnostics means the configuration was built"));
    }
    let mut items: Vec<Diagnostic> = walk
        .found
        .into_iter()
        .map(|(span, mut d)| {
            d.at = span.map(|s| Position::at(text, s.start));
            d
        })
        .collect();
    // In file order; what is not in the file last.
    items.sort_by_key(|d| (d.at.is_none(), d.at));
    Err(fail(items))
}

/// The defaults as TOML: each section a table, `listen` an array of one table.
fn defaults() -> toml::Table {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(t)) => t,
        other => unreachable!("the defaults serialize to a table: {other:?}"),
    }
}

/// Stands in for a value the second parse lacks (it has them all: the parser is the same).
static NONE: toml::Value = toml::Value::Boolean(false);

/// A key (or a whole section, `name: None`) already diagnosed.
struct Reported {
    section: String,
    name: Option<String>,
}

impl Reported {
    fn new(section: &str, name: Option<&str>) -> Reported {
        Reported {
            section: section.into(),
            name: name.map(Into::into),
        }
    }

    /// Whether a check problem at `key` would be about a value already reported: a default
    /// standing in for it.
    fn covers(&self, key: &Key) -> bool {
        self.section == key.section
            && (self.name.is_none() || key.name.is_none() || self.name.as_deref() == key.name)
    }
}

struct Walk {
    defaults: toml::Table,
    /// The keys that passed, by section, as `Config` deserializes them.
    good: toml::Table,
    /// For each table of an array section (`[[listen]]`, `[[access]]`) kept in `good`, its
    /// section and its index in the file.
    in_file: Vec<(String, usize)>,
    /// Diagnostics with the span they point at.
    found: Vec<(Option<Range<usize>>, Diagnostic)>,
    /// The keys already diagnosed, whose value checks would only repeat it.
    reported: Vec<Reported>,
}

impl Walk {
    fn report(
        &mut self,
        span: Option<Range<usize>>,
        key: String,
        message: String,
        hint: Option<String>,
    ) {
        self.found.push((
            span,
            Diagnostic {
                at: None,
                key,
                message,
                hint,
            },
        ));
    }

    /// A top-level entry: a section, `[[listen]]`, or a key outside any section.
    fn top(&mut self, name: &str, item: &Item, value: &toml::Value, key_at: Option<Range<usize>>) {
        let at = item.span().or(key_at.clone());
        match self.defaults.get(name).cloned() {
            Some(toml::Value::Table(defaults)) => {
                let Some(table) = item.as_table_like() else {
                    let hint = if item.is_array_of_tables() {
                        format!("[{name}] is one table: write [{name}] with single brackets")
                    } else {
                        format!("write [{name}] on a line of its own, then its keys")
                    };
                    self.reported.push(Reported::new(name, None));
                    let message = format!("expected a section, found {}", found(value));
                    return self.report(at, format!("[{name}]"), message, Some(hint));
                };
                let good = self.section(name, table, value, &defaults);
                self.good.insert(name.to_string(), toml::Value::Table(good));
            }
            Some(toml::Value::Array(defaults)) => {
                let template = table_template(name, &defaults);
                self.tables(name, item, value, template, at)
            }
            _ if item.is_table_like() || item.is_array_of_tables() => {
                let hint = match closest(name, self.defaults.keys().map(String::as_str)) {
                    Some(s) => format!("did you mean [{}]?", display_section(s)),
                    None => format!("the sections are {}", self.sections()),
                };
                self.report(
                    at,
                    format!("[{name}]"),
                    "unknown section".into(),
                    Some(hint),
                );
            }
            _ => {
                let hint = match self.section_of(name) {
                    Some(s) => format!(
                        "`{name}` belongs in [{}]: move it under that header (keys above the first header belong to no section)",
                        display_section(&s)
                    ),
                    None => format!(
                        "keys go in a section: {}; every key is documented in oasis.toml",
                        self.sections()
                    ),
                };
                self.report(
                    key_at,
                    name.into(),
                    "unknown key outside any section".into(),
                    Some(hint),
                );
            }
        }
    }

    /// The keys of one section (or of one `[[listen]]` table): each known key tried alone over
    /// the defaults, unknown ones reported. Returns the keys that passed.
    fn section(
        &mut self,
        section: &str,
        table: &dyn TableLike,
        values: &toml::Value,
        defaults: &toml::Table,
    ) -> toml::Table {
        let mut good = toml::Table::new();
        for (name, item) in table.iter() {
            let key_at = table.key(name).and_then(|k| k.span());
            let shown = format!("[{}] {name}", display_section(section));
            let known =
                defaults.contains_key(name) || KEYS_WITHOUT_DEFAULT.contains(&(section, name));
            if !known {
                let hint = self.unknown_key_hint(section, name, defaults);
                self.report(key_at, shown, "unknown key".into(), Some(hint));
                continue;
            }
            let value = values.get(name).unwrap_or(&NONE);
            let mut trial = defaults.clone();
            trial.insert(name.to_string(), value.clone());
            match self.try_section(section, trial) {
                Ok(()) => {
                    good.insert(name.to_string(), value.clone());
                }
                Err(e) => {
                    self.reported.push(Reported::new(section, Some(name)));
                    let message = format!(
                        "expected {}, found {}",
                        expected(defaults.get(name), section, name, e.message()),
                        found(value)
                    );
                    let hint = match defaults.get(name) {
                        Some(d) => format!("the default is {name} = {d}"),
                        None => format!("e.g. {name} = \"a-long-random-string\""),
                    };
                    self.report(item.span().or(key_at), shown, message, Some(hint));
                }
            }
        }
        good
    }

    /// Whether `table` deserializes as the whole `section` alongside every other default.
    fn try_section(&self, section: &str, table: toml::Table) -> Result<(), toml::de::Error> {
        let mut trial = self.defaults.clone();
        let table = toml::Value::Table(table);
        trial.insert(
            section.to_string(),
            if TABLE_ARRAYS.iter().any(|(s, ..)| *s == section) {
                toml::Value::Array(vec![table])
            } else {
                table
            },
        );
        toml::Value::Table(trial).try_into::<Config>().map(drop)
    }

    /// An array of tables (`[[listen]]`, `[[access]]`), each needing its key (`addr`, `prefix`).
    fn tables(
        &mut self,
        name: &str,
        item: &Item,
        value: &toml::Value,
        defaults: toml::Table,
        at: Option<Range<usize>>,
    ) {
        let (section, required, example) = TABLE_ARRAYS
            .iter()
            .copied()
            .find(|(s, ..)| *s == name)
            .unwrap_or((LISTEN, "addr", ""));
        let Some(tables) = array_tables(item) else {
            self.reported.push(Reported::new(section, None));
            let hint = if item.is_table() {
                format!(
                    "one [[{section}]] (two brackets) per entry, e.g. [[{section}]] then {example}"
                )
            } else {
                format!("[[{section}]] on a line of its own, then {example}")
            };
            return self.report(
                at,
                format!("[[{section}]]"),
                format!("expected a list of tables, found {}", found(value)),
                Some(hint),
            );
        };
        let mut good = Vec::new();
        for (i, (table, span)) in tables.into_iter().enumerate() {
            let values = value.get(i).unwrap_or(&NONE);
            let kept = self.section(section, table, values, &defaults);
            if !table.contains_key(required) {
                self.reported.push(Reported::new(section, Some(required)));
                self.report(
                    span,
                    format!("[[{section}]] {required}"),
                    format!("missing: every [[{section}]] table needs one"),
                    Some(example.into()),
                );
                continue;
            }
            if !kept.contains_key(required) {
                continue; // a bad value, reported: nothing to keep
            }
            good.push(toml::Value::Table(kept));
            self.in_file.push((section.to_string(), i));
        }
        self.good.insert(section.into(), toml::Value::Array(good));
    }

    fn unknown_key_hint(&self, section: &str, name: &str, defaults: &toml::Table) -> String {
        if let Some(other) = self.section_of(name).filter(|s| s != section) {
            return format!("`{name}` belongs in [{}]", display_section(&other));
        }
        let extra = KEYS_WITHOUT_DEFAULT
            .iter()
            .filter(|(s, _)| *s == section)
            .map(|(_, k)| *k);
        let keys: Vec<&str> = defaults.keys().map(String::as_str).chain(extra).collect();
        match closest(name, keys.iter().copied()) {
            Some(k) => format!("did you mean `{k}`?"),
            None => format!(
                "the keys of [{}] are {}",
                display_section(section),
                keys.join(", ")
            ),
        }
    }

    /// The section that has a key `name`, if one does.
    fn section_of(&self, name: &str) -> Option<String> {
        if let Some((s, _)) = KEYS_WITHOUT_DEFAULT.iter().find(|(_, k)| *k == name) {
            return Some(s.to_string());
        }
        self.defaults.iter().find_map(|(section, v)| {
            let table = match v {
                toml::Value::Array(a) => a.first()?.as_table()?,
                other => other.as_table()?,
            };
            table.contains_key(name).then(|| section.clone())
        })
    }

    fn sections(&self) -> String {
        self.defaults
            .keys()
            .map(|s| format!("[{}]", display_section(s)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Where `key`'s value is in the file; `None` when it is not there.
    fn locate(&self, doc: &ImDocument<&str>, key: &Key) -> Option<Range<usize>> {
        let (section_key, item) = doc.as_table().get_key_value(key.section)?;
        let (table, table_at) = match (key.index, key.name) {
            (None, None) => return item.span().or(section_key.span()),
            (None, Some(_)) => (item.as_table_like()?, None),
            (Some(i), _) => {
                let (_, in_file) = self
                    .in_file
                    .iter()
                    .filter(|(s, _)| s == key.section)
                    .nth(i)?;
                array_tables(item)?.into_iter().nth(*in_file)?
            }
        };
        match key.name {
            Some(name) => {
                let (k, v) = table.get_key_value(name)?;
                v.span().or(k.span())
            }
            None => table_at,
        }
    }
}

const LISTEN: &str = "listen";

/// What each table of an array section starts from: `[[listen]]`'s default entry, or (for a
/// section whose default is empty, `[[access]]`) its own template.
fn table_template(name: &str, defaults: &[toml::Value]) -> toml::Table {
    if let Some(t) = defaults.first().and_then(toml::Value::as_table) {
        return t.clone();
    }
    match name {
        "access" => match toml::Value::try_from(super::AccessSection::default()) {
            Ok(toml::Value::Table(t)) => t,
            _ => toml::Table::new(),
        },
        _ => toml::Table::new(),
    }
}

/// One table of an array section and where it starts.
type ArrayTable<'a> = (&'a dyn TableLike, Option<Range<usize>>);

/// The tables of `[[listen]]` (or of `listen = [{ ... }]`), and of `[[access]]`.
fn array_tables(item: &Item) -> Option<Vec<ArrayTable<'_>>> {
    if let Some(array) = item.as_array_of_tables() {
        return Some(
            array
                .iter()
                .map(|t| (t as &dyn TableLike, t.span()))
                .collect(),
        );
    }
    item.as_array()?
        .iter()
        .map(|v| v.as_inline_table().map(|t| (t as &dyn TableLike, t.span())))
        .collect()
}

/// `listen` as the file spells it, `[[listen]]`'s inner name; others as they are.
fn display_section(section: &str) -> String {
    if TABLE_ARRAYS.iter().any(|(s, ..)| *s == section) {
        format!("[{section}]")
    } else {
        section.into()
    }
}

/// What a key takes, in plain words, from its default and the deserializer's complaint.
fn expected(default: Option<&toml::Value>, section: &str, name: &str, why: &str) -> String {
    if section == "listen" && name == "addr" {
        return "an IP address and a port in double quotes, e.g. \"127.0.0.1:8080\"".into();
    }
    match default {
        Some(toml::Value::Integer(_)) => {
            let max = ["u8", "u16", "u32"]
                .iter()
                .zip([u8::MAX as u64, u16::MAX as u64, u32::MAX as u64])
                .find(|(t, _)| why.ends_with(&format!("expected {t}")))
                .map(|(_, max)| max);
            match max {
                Some(max) => format!("a whole number from 0 to {max}"),
                None => "a whole number, 0 or more".into(),
            }
        }
        Some(toml::Value::Float(_)) => "a number, e.g. 1.5".into(),
        Some(toml::Value::Boolean(_)) => "true or false (without quotes)".into(),
        Some(toml::Value::Array(_)) => "a list of whole numbers, e.g. [0, 1]".into(),
        Some(toml::Value::String(_)) | None => "a string in double quotes".into(),
        Some(_) => why.to_string(),
    }
}

/// What a value is, in plain words.
fn found(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(i) => format!("the number {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diagnostics for `text`, one string each: "line:col key: message | hint".
    fn errors(text: &str) -> Vec<String> {
        let err = read(text, "t.toml").expect_err("the text has errors");
        err.items
            .iter()
            .map(|d| {
                let at =
                    d.at.map_or("-".into(), |p| format!("{}:{}", p.line, p.column));
                let hint = d.hint.as_deref().unwrap_or("");
                format!("{at} {}: {} | {hint}", d.key, d.message)
            })
            .collect()
    }

    #[test]
    fn an_unknown_key_a_wrong_type_and_a_failing_check_in_one_run() {
        let text = "[server]\ndata_dri = \"x\"\n\n[engine]\npin = 3\nchunk_bytes = 1000\n";
        assert_eq!(
            errors(text),
            [
                "2:1 [server] data_dri: unknown key | did you mean `data_dir`?",
                "5:7 [engine] pin: expected true or false (without quotes), found the number 3 | the default is pin = true",
                "6:15 [engine] chunk_bytes: must be a multiple of 4096 between 4096 and 16 MiB (got 1000) | the nearest allowed is chunk_bytes = 4096",
            ]
        );
        let shown = read(text, "t.toml").unwrap_err().to_string();
        assert!(shown.starts_with("t.toml:2:1: [server] data_dri: unknown key\n  hint: did you mean `data_dir`?\nt.toml:5:7: "), "{shown}");
        assert!(shown.ends_with("\n3 errors in t.toml"), "{shown}");
    }

    #[test]
    fn a_key_in_the_wrong_section_is_sent_to_its_own() {
        assert_eq!(
            errors("[server]\nchunk_bytes = 4096\n"),
            ["2:1 [server] chunk_bytes: unknown key | `chunk_bytes` belongs in [engine]"]
        );
        assert_eq!(
            errors("log_level = \"debug\"\n[server]\n"),
            ["1:1 log_level: unknown key outside any section | `log_level` belongs in [server]: move it under that header (keys above the first header belong to no section)"]
        );
        // api_token has no default, and so is not among the serialized keys.
        assert_eq!(
            errors("[engine]\napi_token = \"0123456789abcdef\"\n"),
            ["2:1 [engine] api_token: unknown key | `api_token` belongs in [http]"]
        );
        assert_eq!(
            errors("[http]\napi_tokn = \"0123456789abcdef\"\n"),
            ["2:1 [http] api_tokn: unknown key | did you mean `api_token`?"]
        );
    }

    #[test]
    fn unknown_sections_and_listen_tables() {
        assert_eq!(
            errors("[engin]\npin = true\n"),
            ["1:1 [engin]: unknown section | did you mean [engine]?"]
        );
        assert_eq!(
            errors("[[listen]]\naddr = \"127.0.0.1:1\"\nbandwith_bps = 5\n\n[[listen]]\nbandwidth_bps = 5\n"),
            [
                "3:1 [[listen]] bandwith_bps: unknown key | did you mean `bandwidth_bps`?",
                "5:1 [[listen]] addr: missing: every [[listen]] table needs one | addr = \"127.0.0.1:8080\" (an IP address and a port)",
            ]
        );
        let e = errors("[listen]\naddr = \"127.0.0.1:1\"\n");
        assert!(
            e[0].starts_with("1:1 [[listen]]: expected a list of tables"),
            "{e:?}"
        );
        // A table with a bad address is left out; the checks still locate the tables after it.
        assert_eq!(
            errors("[[listen]]\naddr = \"127.0.0.1:1\"\n[[listen]]\naddr = \"nope\"\n[[listen]]\naddr = \"127.0.0.1:1\"\nbandwidth_bps = 0\n"),
            [
                "4:8 [[listen]] addr: expected an IP address and a port in double quotes, e.g. \"127.0.0.1:8080\", found the string \"nope\" | the default is addr = \"127.0.0.1:8080\"",
                "7:17 [[listen]] bandwidth_bps: must be positive for 127.0.0.1:1 (bits per second) | e.g. bandwidth_bps = 10000000000 for 10 Gbit/s",
            ]
        );
        assert_eq!(
            errors("[[listen]]\naddr = \"127.0.0.1:1\"\n[[listen]]\naddr = \"127.0.0.1:1\"\nbandwidth_bps = 0\n"),
            [
                "4:8 [[listen]] addr: 127.0.0.1:1 is given twice | [[listen]] table 1 already has it; remove one",
                "5:17 [[listen]] bandwidth_bps: must be positive for 127.0.0.1:1 (bits per second) | e.g. bandwidth_bps = 10000000000 for 10 Gbit/s",
            ]
        );
    }

    #[test]
    fn wrong_types_say_what_the_key_takes_and_its_default() {
        assert_eq!(
            errors("[engine]\nchunk_bytes = \"big\"\ncores = 1\n[resources]\nwarn_percent = 70000\n"),
            [
                "2:15 [engine] chunk_bytes: expected a whole number, 0 or more, found the string \"big\" | the default is chunk_bytes = 262144",
                "3:9 [engine] cores: expected a list of whole numbers, e.g. [0, 1], found the number 1 | the default is cores = []",
                "5:16 [resources] warn_percent: expected a whole number from 0 to 65535, found the number 70000 | the default is warn_percent = 80",
            ]
        );
        assert_eq!(
            errors("[http]\napi_token = 12\n"),
            ["2:13 [http] api_token: expected a string in double quotes, found the number 12 | e.g. api_token = \"a-long-random-string\""]
        );
    }

    #[test]
    fn a_check_on_a_key_not_in_the_file_has_no_position_but_its_key() {
        // chunk_bytes is the default (262144): the pool is too small for it.
        assert_eq!(
            errors("[engine]\nbuffer_pool_bytes = 4096\n[storage]\nread_mode = \"direct\"\n"),
            ["2:21 [engine] buffer_pool_bytes: must hold at least 4 chunks of chunk_bytes (1048576 bytes; got 4096) | buffer_pool_bytes = 1048576, or a smaller chunk_bytes"]
        );
        assert_eq!(
            errors("[[listen]]\naddr = \"127.0.0.1:1\"\n[storage]\nread_mode = \"direct\"\n[engine]\nchunk_bytes = 4096\n[http]\napi_token = \"short\"\n"),
            [
                "6:15 [engine] chunk_bytes: must be at least 8192 with [storage] read_mode = \"direct\" (got 4096) | chunk_bytes = 8192, or [storage] read_mode = \"buffered\"",
                "8:13 [http] api_token: the file key is 5 characters long; an API token needs at least 16 | use a long random string, e.g. the output of `openssl rand -hex 16` (32 characters)",
            ]
        );
        let mut cfg = Config::default();
        cfg.engine.layout = "f=0".into();
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.starts_with("[engine] layout: "), "{err}");
        assert!(err.ends_with("\n1 error in the configuration"), "{err}");
    }

    #[test]
    fn a_syntax_error_is_one_diagnostic_with_a_hint_from_its_line() {
        assert_eq!(
            errors("[server]\ndata_dri = \"x\"\nlog_level = debug\n"),
            ["3:13 : not valid TOML: invalid string; expected `\"`, `'` | strings need quotes: log_level = \"debug\""]
        );
        assert_eq!(
            errors("[server]\ndata_dir = \"a\"\n\ndata_dir = \"b\"\n"),
            ["4:1 : not valid TOML: duplicate key `data_dir` in table `server` | `data_dir` is already set on line 2: keep one of the two"]
        );
    }
}
