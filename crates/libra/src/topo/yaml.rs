//! A strict reader for the YAML subset that LIBRA's and ASTRA-sim 2.0's files use: `Key: scalar`,
//! `Key: [a, b, c]`, nested mappings by indentation, block lists of scalars (`- item`) and `#`
//! comments. Anything else (flow mappings `{...}`, nested flow lists, anchors, tags, block
//! scalars, several documents) is a parse error naming the line, never a silent default.
//!
//! Written by hand rather than taken from a YAML crate: the widely used `serde_yaml` and
//! `yaml-rust` are unmaintained (and `serde_yml` was flagged unsound), the maintained
//! successors bring a full YAML 1.2 grammar into a library that engines link, and a full
//! grammar still needs a schema check on top to refuse what LIBRA refuses. Nesting is bounded
//! by [`MAX_DEPTH`], so no input can exhaust the stack.
use crate::error::{Error, Result, Status};

/// Largest text a parser accepts: these files are a few kilobytes, and the parsed form takes
/// a multiple of the text's size.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// Deepest nesting of mappings accepted (LIBRA's files nest 2 levels; the bound keeps the
/// recursion within a few kilobytes of stack).
pub const MAX_DEPTH: usize = 16;

/// One `key: value` entry of a mapping, with its line (1-based) for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Yaml,
    pub line: usize,
}

/// A parsed value of the supported subset. An empty value (`Key:` with nothing below) is
/// `Scalar("")`.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Scalar(String),
    List(Vec<String>),
    Map(Vec<Entry>),
}

impl Yaml {
    /// Exact-case key lookup in a mapping (YAML keys, and LIBRA's, are case-sensitive).
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match self {
            Yaml::Map(m) => m.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        match self {
            Yaml::Map(m) => m,
            _ => &[],
        }
    }
}

pub(crate) fn parse_err(msg: impl Into<String>) -> Error {
    Error::new(Status::LIBRA_ERR_PARSE, msg)
}

pub(crate) fn check_size(text: &str, what: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(parse_err(format!(
            "{what}: the text is {} bytes; at most {MAX_TEXT_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}

struct Line {
    no: usize,
    indent: usize,
    text: String,
}

/// Strips a comment: `#` at the start or after whitespace, outside quotes.
fn strip_comment(raw: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in raw.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && prev_space => return &raw[..i],
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    raw
}

/// Parses the subset; the top level must be a mapping.
pub fn parse_yaml(text: &str) -> Result<Yaml> {
    check_size(text, "YAML")?;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let content = strip_comment(raw).trim_end();
        if content.trim().is_empty() {
            continue;
        }
        let body = content.trim_start_matches(' ');
        if body.starts_with('\t') {
            return Err(parse_err(format!("line {no}: tabs are not allowed in YAML indentation")));
        }
        if body == "---" && lines.is_empty() {
            continue;
        }
        if body.starts_with("---") || body.starts_with("...") {
            return Err(parse_err(format!("line {no}: only one YAML document is accepted")));
        }
        lines.push(Line { no, indent: content.len() - body.len(), text: body.to_string() });
    }
    if let Some(first) = lines.first() {
        if first.indent != 0 || first.text.starts_with("- ") || first.text == "-" {
            return Err(parse_err(format!("line {}: the top level must be a mapping of keys", first.no)));
        }
    }
    let mut pos = 0;
    let v = parse_map(&lines, &mut pos, 0, 1)?;
    if let Some(l) = lines.get(pos) {
        return Err(parse_err(format!("line {}: unexpected indentation", l.no)));
    }
    Ok(v)
}

/// A scalar: quotes removed; YAML features outside the subset refused.
fn scalar(s: &str, no: usize) -> Result<String> {
    let s = s.trim();
    if let Some(q @ ('"' | '\'')) = s.chars().next() {
        if s.len() < 2 || !s.ends_with(q) {
            return Err(parse_err(format!("line {no}: unterminated quoted string `{s}`")));
        }
        return Ok(s[1..s.len() - 1].to_string());
    }
    match s.chars().next() {
        Some('{') => Err(parse_err(format!(
            "line {no}: flow-style mappings `{{...}}` are not supported; write one `key: value` per line, indented"
        ))),
        Some('[') | Some(']') => Err(parse_err(format!("line {no}: nested lists are not supported"))),
        Some(c @ ('&' | '*' | '!' | '|' | '>' | '%' | '@' | '`')) => {
            Err(parse_err(format!("line {no}: YAML feature `{c}` is not supported")))
        }
        _ if s.contains(": ") || s.ends_with(':') => {
            Err(parse_err(format!("line {no}: a mapping is not allowed here (`{s}`)")))
        }
        _ => Ok(s.to_string()),
    }
}

fn flow_list(rest: &str, no: usize) -> Result<Vec<String>> {
    let inner = rest[1..]
        .strip_suffix(']')
        .ok_or_else(|| parse_err(format!("line {no}: `[` without a closing `]` on the same line")))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = inner.split(',').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if p.trim().is_empty() {
            // YAML allows one trailing comma.
            if i + 1 == parts.len() && i > 0 {
                continue;
            }
            return Err(parse_err(format!("line {no}: empty list item")));
        }
        out.push(scalar(p, no)?);
    }
    Ok(out)
}

fn parse_list(lines: &[Line], pos: &mut usize, indent: usize) -> Result<Yaml> {
    let mut items = Vec::new();
    while let Some(l) = lines.get(*pos) {
        if l.indent != indent || !(l.text.starts_with("- ") || l.text == "-") {
            break;
        }
        let item = l.text[1..].trim();
        if item.starts_with('-') {
            return Err(parse_err(format!("line {}: nested lists are not supported", l.no)));
        }
        items.push(scalar(item, l.no)?);
        *pos += 1;
    }
    if let Some(l) = lines.get(*pos) {
        if l.indent > indent {
            return Err(parse_err(format!("line {}: unexpected indentation after a list", l.no)));
        }
    }
    Ok(Yaml::List(items))
}

fn parse_map(lines: &[Line], pos: &mut usize, indent: usize, depth: usize) -> Result<Yaml> {
    let mut map: Vec<Entry> = Vec::new();
    while let Some(l) = lines.get(*pos) {
        let no = l.no;
        if l.indent < indent {
            break;
        }
        if l.indent > indent {
            return Err(parse_err(format!("line {no}: unexpected indentation")));
        }
        if l.text.starts_with("- ") || l.text == "-" {
            return Err(parse_err(format!("line {no}: a list item where a `key: value` was expected")));
        }
        // The key ends at the first `:` followed by a space or the end of the line.
        let colon = l
            .text
            .char_indices()
            .find(|&(i, c)| c == ':' && matches!(l.text[i + 1..].chars().next(), None | Some(' ')))
            .map(|(i, _)| i)
            .ok_or_else(|| parse_err(format!("line {no}: expected `key: value`, found `{}`", l.text)))?;
        let key = scalar(&l.text[..colon], no)?;
        if key.is_empty() {
            return Err(parse_err(format!("line {no}: empty key")));
        }
        let rest = l.text[colon + 1..].trim();
        *pos += 1;
        let value = if rest.is_empty() {
            match lines.get(*pos) {
                Some(next)
                    if next.indent > indent || (next.indent == indent && next.text.starts_with('-')) =>
                {
                    if depth >= MAX_DEPTH {
                        return Err(parse_err(format!(
                            "line {}: nesting deeper than {MAX_DEPTH} levels",
                            next.no
                        )));
                    }
                    if next.text.starts_with("- ") || next.text == "-" {
                        parse_list(lines, pos, next.indent)?
                    } else {
                        parse_map(lines, pos, next.indent, depth + 1)?
                    }
                }
                _ => Yaml::Scalar(String::new()),
            }
        } else if rest.starts_with('[') {
            Yaml::List(flow_list(rest, no)?)
        } else {
            Yaml::Scalar(scalar(rest, no)?)
        };
        if let Some(prev) = map.iter().find(|e| e.key == key) {
            return Err(parse_err(format!("line {no}: duplicate key `{key}` (first on line {})", prev.line)));
        }
        map.push(Entry { key, value, line: no });
    }
    Ok(Yaml::Map(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> String {
        v.to_string()
    }

    #[test]
    fn subset() {
        let doc =
            parse_yaml("# c\nA: [ 1, 2 ,3 ]  # x\nB:\n  C: 4.5\n  D: 'x#y'\nE:\n  - p\n  - q\nF:\n- r\n")
                .unwrap();
        assert_eq!(doc.get("A"), Some(&Yaml::List(vec![s("1"), s("2"), s("3")])));
        assert_eq!(doc.get("a"), None, "keys are case-sensitive");
        assert_eq!(doc.get("B").unwrap().get("C"), Some(&Yaml::Scalar(s("4.5"))));
        assert_eq!(doc.get("B").unwrap().get("D"), Some(&Yaml::Scalar(s("x#y"))));
        assert_eq!(doc.get("E"), Some(&Yaml::List(vec![s("p"), s("q")])));
        assert_eq!(doc.get("F"), Some(&Yaml::List(vec![s("r")])));
        assert_eq!(doc.entry("B").unwrap().line, 3);
    }

    #[test]
    fn outside_the_subset_is_an_error_naming_the_line() {
        let cases = [
            ("A: [1, 2\n", "line 1"),
            ("A: 1\n   B: 2\n", "line 2"),
            ("P:\n  InterPod: {Link: 7.8, Switch: 18}\n", "flow-style"),
            ("A: [1, [2]]\n", "nested"),
            ("A: &x 1\n", "`&`"),
            ("A: |\n  text\n", "`|`"),
            ("A: 1\n---\nB: 2\n", "document"),
            ("A: 1\nA: 2\n", "duplicate key `A`"),
            ("A: [1,,2]\n", "empty list item"),
            ("- 1\n", "top level"),
            ("A:\n  - x: 1\n", "mapping is not allowed"),
            ("A: 'open\n", "unterminated"),
            ("A:\n\t B: 1\n", "tabs"),
        ];
        for (text, want) in cases {
            let e = parse_yaml(text).unwrap_err();
            assert_eq!(e.status, Status::LIBRA_ERR_PARSE, "{text:?}");
            assert!(e.message.contains(want), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut text = String::new();
        for i in 0..MAX_DEPTH + 1 {
            text.push_str(&" ".repeat(i));
            text.push_str("k:\n");
        }
        let e = parse_yaml(&text).unwrap_err();
        assert!(e.message.contains("nesting deeper"), "{}", e.message);
    }
}
