//! A configuration fragment sent over HTTP, and how it is merged into the operator's file.
//!
//! A fragment is TOML or JSON of the same shape as the file: sections of keys, and `listen` as
//! a list of tables. [`parse`] turns either into a TOML table (a JSON `null`, or a top level
//! that is not an object, is refused: TOML has no null); [`merge`] writes it into the file's
//! `toml_edit` document key by key, so the operator's comments, order and layout stay, and a
//! value keeps the comment at the end of its line. A list of tables (`[[listen]]`) is replaced
//! whole. Whether the keys exist and the values fit is not checked here: the merged text goes
//! through the same reading as `oasis config check`. Pure: no file, no clock.

use toml_edit::{ArrayOfTables, DocumentMut, Item, Table, TableLike, Value};

use crate::config::{syntax, Diagnostic};

/// An example fragment, for the messages.
const EXAMPLE_TOML: &str = "[pacing] then factor_progressive = 2.0";
const EXAMPLE_JSON: &str = "{\"pacing\": {\"factor_progressive\": 2.0}}";

/// Reads a fragment: TOML, or JSON when `json`. The error says what is wrong and where.
pub fn parse(bytes: &[u8], json: bool) -> Result<Table, Diagnostic> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(refusal("", "the fragment is not UTF-8 text", None));
    };
    if text.trim().is_empty() {
        let example = if json { EXAMPLE_JSON } else { EXAMPLE_TOML };
        return Err(refusal(
            "",
            "the fragment is empty",
            Some(format!("send the keys to change, e.g. {example}")),
        ));
    }
    if json {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| refusal("", &format!("not valid JSON: {e}"), None))?;
        let serde_json::Value::Object(top) = value else {
            return Err(refusal(
                "",
                "the top level of a JSON fragment must be an object of sections",
                Some(format!("e.g. {EXAMPLE_JSON}")),
            ));
        };
        let mut table = Table::new();
        for (name, v) in &top {
            table.insert(name, json_item(name, v)?);
        }
        return Ok(table);
    }
    match text.parse::<DocumentMut>() {
        Ok(doc) => Ok(doc.as_table().clone()),
        Err(e) => {
            let at = e.span().map_or(text.len(), |s| s.start);
            let mut d = syntax(text, at, e.message());
            if let Some(p) = d.at {
                d.message = format!(
                    "fragment line {}, column {}: {}",
                    p.line, p.column, d.message
                );
            }
            Err(d)
        }
    }
}

fn refusal(key: &str, message: &str, hint: Option<String>) -> Diagnostic {
    Diagnostic {
        at: None,
        key: key.to_string(),
        message: message.to_string(),
        hint,
    }
}

/// A top-level JSON value: an object is a section, a list of objects a list of tables.
fn json_item(name: &str, v: &serde_json::Value) -> Result<Item, Diagnostic> {
    match v {
        serde_json::Value::Object(map) => {
            let mut table = Table::new();
            for (k, v) in map {
                table.insert(k, Item::Value(json_value(&format!("{name}.{k}"), v)?));
            }
            Ok(Item::Table(table))
        }
        other => Ok(Item::Value(json_value(name, other)?)),
    }
}

/// A JSON value as a TOML value; `key` names it in a refusal.
fn json_value(key: &str, v: &serde_json::Value) -> Result<Value, Diagnostic> {
    Ok(match v {
        serde_json::Value::Null => {
            return Err(refusal(
                key,
                "null is not a value: TOML has none",
                Some("leave the key out to keep its value".into()),
            ))
        }
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(_)) if n.is_u64() => {
                return Err(refusal(
                    key,
                    &format!("{n} is larger than TOML's largest integer ({})", i64::MAX),
                    None,
                ))
            }
            (None, Some(f)) => Value::from(f),
            (None, None) => return Err(refusal(key, &format!("{n} is not a number"), None)),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            let mut array = toml_edit::Array::new();
            for (i, item) in items.iter().enumerate() {
                array.push_formatted(json_value(&format!("{key}[{i}]"), item)?);
            }
            Value::Array(array)
        }
        serde_json::Value::Object(map) => {
            let mut table = toml_edit::InlineTable::new();
            for (k, v) in map {
                table.insert(k, json_value(&format!("{key}.{k}"), v)?);
            }
            Value::InlineTable(table)
        }
    })
}

/// Writes `fragment` into `doc`: each key of a section set in place (a value that replaces
/// another keeps its spacing and end-of-line comment), a section the file lacks added at its
/// end, and a list of tables replaced whole where the old one was (keeping the comment above
/// its first table).
pub fn merge(doc: &mut DocumentMut, fragment: &Table) {
    for (name, item) in fragment.iter() {
        if let Some(tables) = list_of_tables(item) {
            replace_tables(doc, name, &tables);
        } else if let Some(section) = item.as_table_like() {
            match doc.get_mut(name).and_then(Item::as_table_like_mut) {
                Some(target) => {
                    for (key, value) in section.iter() {
                        set(target, key, value);
                    }
                }
                None => {
                    let mut table = fresh_table(section);
                    // After every table the file has.
                    table.set_position(usize::MAX);
                    doc.insert(name, Item::Table(table));
                }
            }
        } else {
            // A key outside any section: written as sent; the check names it.
            set(doc.as_table_mut(), name, item);
        }
    }
}

/// The tables of `[[name]]` or of `name = [{...}, ...]` (a non-empty list of inline tables).
fn list_of_tables(item: &Item) -> Option<Vec<&dyn TableLike>> {
    if let Some(a) = item.as_array_of_tables() {
        return Some(a.iter().map(|t| t as &dyn TableLike).collect());
    }
    let array = item.as_array().filter(|a| !a.is_empty())?;
    array
        .iter()
        .map(|v| v.as_inline_table().map(|t| t as &dyn TableLike))
        .collect()
}

fn replace_tables(doc: &mut DocumentMut, name: &str, tables: &[&dyn TableLike]) {
    let old = doc.get(name).and_then(Item::as_array_of_tables);
    let position = old.and_then(|a| a.get(0)).and_then(Table::position);
    let decor = old.and_then(|a| a.get(0)).map(|t| t.decor().clone());
    let mut new = ArrayOfTables::new();
    for (i, t) in tables.iter().enumerate() {
        let mut table = fresh_table(*t);
        table.set_position(position.unwrap_or(usize::MAX));
        if let (0, Some(decor)) = (i, &decor) {
            *table.decor_mut() = decor.clone();
        }
        new.push(table);
    }
    doc.insert(name, Item::ArrayOfTables(new));
}

/// A new table with the keys of `from`, laid out as a fresh one.
fn fresh_table(from: &dyn TableLike) -> Table {
    let mut table = Table::new();
    for (key, value) in from.iter() {
        set(&mut table, key, value);
    }
    table
}

/// Sets `key` in `target` to `item`'s value, keeping the decor of the value it replaces.
fn set(target: &mut dyn TableLike, key: &str, item: &Item) {
    let Ok(mut value) = item.clone().into_value() else {
        return; // nothing to write (an empty item)
    };
    value.decor_mut().clear();
    match target.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => {
            target.insert(key, Item::Value(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Oasis on the edge box.
[server]
data_dir = \"/srv/oasis\"   # the big disk

# One address per interface.
[[listen]]
addr = \"127.0.0.1:8080\"

[[listen]]
addr = \"10.0.0.1:8080\"

[pacing]
# Players buffer ahead.
factor_progressive = 1.5 # was 1.2
";

    fn merged(fragment: &str, json: bool) -> String {
        let mut doc: DocumentMut = FILE.parse().unwrap();
        merge(&mut doc, &parse(fragment.as_bytes(), json).unwrap());
        doc.to_string()
    }

    #[test]
    fn a_changed_value_keeps_every_comment_and_the_layout() {
        let out = merged("[pacing]\nfactor_progressive = 2.5\n", false);
        assert_eq!(
            out,
            FILE.replace(
                "factor_progressive = 1.5 # was 1.2",
                "factor_progressive = 2.5 # was 1.2"
            )
        );
        // The same from JSON.
        assert_eq!(
            out,
            merged("{\"pacing\":{\"factor_progressive\":2.5}}", true)
        );
    }

    #[test]
    fn new_keys_and_sections_are_added_after_what_is_there() {
        let out = merged(
            "[pacing]\nfactor_segment = 3.0\n[http]\nkeepalive_requests_max = 10\n",
            false,
        );
        let expected = format!(
            "{}factor_segment = 3.0\n\n[http]\nkeepalive_requests_max = 10\n",
            FILE
        );
        assert_eq!(out, expected);
        let doc: DocumentMut = out.parse().unwrap();
        assert_eq!(doc["http"]["keepalive_requests_max"].as_integer(), Some(10));
    }

    #[test]
    fn a_list_of_tables_is_replaced_whole_in_its_place() {
        let expected = FILE.replace(
            "[[listen]]\naddr = \"127.0.0.1:8080\"\n\n[[listen]]\naddr = \"10.0.0.1:8080\"\n",
            "[[listen]]\naddr = \"127.0.0.1:9090\"\nbandwidth_bps = 1000\n",
        );
        let toml = "[[listen]]\naddr = \"127.0.0.1:9090\"\nbandwidth_bps = 1000\n";
        assert_eq!(merged(toml, false), expected);
        let inline = "listen = [{ addr = \"127.0.0.1:9090\", bandwidth_bps = 1000 }]\n";
        assert_eq!(merged(inline, false), expected);
        let json = "{\"listen\":[{\"addr\":\"127.0.0.1:9090\",\"bandwidth_bps\":1000}]}";
        assert_eq!(merged(json, true), expected);
    }

    #[test]
    fn json_null_and_a_top_level_that_is_not_an_object_are_refused() {
        let e = parse(b"{\"pacing\":{\"factor_progressive\":null}}", true).unwrap_err();
        assert_eq!(e.key, "pacing.factor_progressive");
        assert!(e.message.contains("null"), "{e:?}");
        for top in ["[1, 2]", "null", "\"pacing\"", "3"] {
            let e = parse(top.as_bytes(), true).unwrap_err();
            assert!(e.message.contains("top level"), "{top}: {e:?}");
        }
        let e = parse(
            b"{\"http\":{\"upload_bytes_max\":18446744073709551615}}",
            true,
        )
        .unwrap_err();
        assert_eq!(e.key, "http.upload_bytes_max");
        let e = parse(b"{\"pacing\": ", true).unwrap_err();
        assert!(e.message.starts_with("not valid JSON"), "{e:?}");
    }

    #[test]
    fn bad_toml_empty_and_binary_fragments_are_refused() {
        let e = parse(b"[pacing]\nfactor_progressive = fast\n", false).unwrap_err();
        assert!(
            e.message
                .starts_with("fragment line 2, column 22: not valid TOML"),
            "{e:?}"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("strings need quotes: factor_progressive = \"fast\"")
        );
        assert!(parse(b" \n", false).unwrap_err().message.contains("empty"));
        assert!(parse(b"\xff\xfe", false)
            .unwrap_err()
            .message
            .contains("UTF-8"));
    }

    #[test]
    fn a_section_given_where_a_list_of_tables_is_replaces_it_for_the_check_to_name() {
        let out = merged("[listen]\naddr = \"127.0.0.1:1\"\n", false);
        let doc: DocumentMut = out.parse().unwrap();
        assert!(doc["listen"].is_table(), "{out}");
        assert!(out.contains("# Oasis on the edge box."));
    }
}
