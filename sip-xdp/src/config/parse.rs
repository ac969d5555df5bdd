//! Errors an operator can act on: `file:line:column`, the key named by
//! its dotted path, and one sentence saying what the value must be. The integer range check every
//! ranged key shares runs inside its visitor, so toml attaches the value's span to the error.
use std::{fmt, ops::Range, path::PathBuf};

use serde::{
    Deserializer,
    de::{self, Visitor},
};
use thiserror::Error;
use toml::de::{DeTable, DeValue};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(
        "cannot read the sip-xdp configuration {}: {source}; check the path and that this user \
         may read it (etc/sip-xdp.toml in the sip-xdp sources is a commented example)",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration; `message` names the key and the fix.
    #[error("{origin}{}: {message}", location_suffix(location))]
    Invalid {
        origin: String,
        location: Option<Location>,
        message: String,
    },
}

impl ConfigError {
    /// True when the file does not exist (a caller may then fall back to the defaults).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// A position in the configuration text, both 1-based; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

fn location_suffix(location: &Option<Location>) -> String {
    match location {
        Some(Location { line, column }) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

fn location_of(text: &str, offset: usize) -> Location {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// The error for text toml refused: at the span it names, under the dotted key covering it.
pub(super) fn invalid_toml(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let span = err.span();
    let key = span.as_ref().and_then(|span| key_path_at(text, span));
    ConfigError::Invalid {
        origin: origin.to_owned(),
        location: span.map(|span| location_of(text, span.start)),
        message: compose_message(key.as_deref(), err.message().trim_end()),
    }
}

/// The error for a check across keys: at the value of the first of its keys the file sets.
pub(super) fn invalid_across_fields(
    text: &str,
    origin: &str,
    problem: CrossFieldProblem,
) -> ConfigError {
    let span = problem.keys.iter().find_map(|key| value_span(text, key));
    ConfigError::Invalid {
        origin: origin.to_owned(),
        location: span.map(|span| location_of(text, span.start)),
        message: problem.message,
    }
}

pub(super) struct CrossFieldProblem {
    /// Keys whose value the error points at, the first present in the file wins.
    pub(super) keys: Vec<&'static [&'static str]>,
    pub(super) message: String,
}

/// Joins a key path and a deserialisation message into one sentence. Messages from this
/// module's validators start with "must", so they read as "bans.factor must be ...".
fn compose_message(key: Option<&str>, reason: &str) -> String {
    let Some(key) = key else {
        return reason.to_owned();
    };
    if reason.starts_with("must ") {
        return format!("{key} {reason}");
    }
    if let Some(rest) = reason.strip_prefix("unknown field `")
        && let Some((_, expected)) = rest.split_once("`, ")
    {
        return format!("unknown key `{key}`; check its spelling ({expected})");
    }
    format!("{key}: {reason}")
}

/// Dotted path of the key whose key or value text covers `span` (the deepest one).
fn key_path_at(text: &str, span: &Range<usize>) -> Option<String> {
    let root = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    find_key_path(root.get_ref(), span, &mut path).then(|| path.join("."))
}

fn find_key_path(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    for (key, value) in table.iter() {
        path.push(key.get_ref().to_string());
        if key.span() == *span {
            return true;
        }
        if let DeValue::Table(inner) = value.get_ref()
            && find_key_path(inner, span, path)
        {
            return true;
        }
        let value_span = value.span();
        if value_span.start <= span.start && span.end <= value_span.end {
            return true;
        }
        path.pop();
    }
    false
}

/// Span of the value at a dotted key path, when the file sets it.
fn value_span(text: &str, keys: &[&str]) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let (last, parents) = keys.split_last()?;
    let mut table = root.get_ref();
    for key in parents {
        match table.get(*key)?.get_ref() {
            DeValue::Table(inner) => table = inner,
            _ => return None,
        }
    }
    Some(table.get(*last)?.span())
}

/// An integer in `min..=max`, checked inside the visitor so the error carries the value's span.
pub(super) struct IntInRange {
    /// Starts the message, after the key: "must be" or, in a list, "must only hold ports".
    pub(super) lead: &'static str,
    pub(super) min: i64,
    pub(super) max: i64,
    /// Appended when the value is 0, to say why 0 is not allowed.
    pub(super) zero_note: &'static str,
}

impl Visitor<'_> for IntInRange {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between {} and {}", self.min, self.max)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if (self.min..=self.max).contains(&v) {
            return Ok(v);
        }
        let note = if v == 0 { self.zero_note } else { "" };
        Err(E::custom(format!(
            "{} between {} and {}, got {v}{note}",
            self.lead, self.min, self.max
        )))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!(
                "{} between {} and {}, got {v}",
                self.lead, self.min, self.max
            ))),
        }
    }
}

pub(super) fn int_in_range<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
    min: T,
    max: T,
    zero_note: &'static str,
) -> Result<T, D::Error>
where
    i64: From<T>,
{
    let v = d.deserialize_i64(IntInRange {
        lead: "must be",
        min: i64::from(min),
        max: i64::from(max),
        zero_note,
    })?;
    T::try_from(v).map_err(|_| de::Error::custom(format!("must fit the field's range, got {v}")))
}
