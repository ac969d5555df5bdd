//! The stream as the Local API writes it: every field optional, durations in Go's syntax.
use serde::Deserialize;

/// Seconds in a Go `time.Duration` string, as the Local API writes a decision's remaining time
/// ("3h59m58.123456s", "-204.069056ms" for one already over, "500µs", "0s").
pub fn parse_go_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Some(if negative { -total } else { total })
}

/// One decision as the stream gives it; every field optional, so one odd decision is skipped
/// rather than failing the whole poll.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamDecision {
    #[serde(default)]
    pub id: i64,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub scenario: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
}

/// `GET /v1/decisions/stream`'s answer; the Local API writes `null` for an empty list.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DecisionStream {
    #[serde(default)]
    pub new: Option<Vec<StreamDecision>>,
    #[serde(default)]
    pub deleted: Option<Vec<StreamDecision>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let close = |text: &str, want: f64| {
            let got = parse_go_duration(text).unwrap_or_else(|| panic!("{text:?} rejected"));
            assert!((got - want).abs() < 1e-6, "{text:?}: {got} != {want}");
        };
        close("3h59m58.123456s", 3.0 * 3600.0 + 59.0 * 60.0 + 58.123456);
        close("59.229907474s", 59.229907474);
        close("-204.069056ms", -0.204069056);
        close("-1h2m", -3720.0);
        close("500\u{b5}s", 0.0005);
        close("500\u{3bc}s", 0.0005);
        close("1.5us", 0.0000015);
        close("12ns", 12e-9);
        close("0s", 0.0);
        close("0", 0.0);
        close("4h", 14400.0);
        for bad in ["", "-", "h", "5", "5d", "1h5", ".s", "1..2s", "abc"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_stream_json_parses_with_nulls() {
        let s: DecisionStream = serde_json::from_str(
            r#"{"deleted":null,"new":[{"duration":"59m56.636204677s","id":1,"origin":"cscli",
            "scenario":"manual 'ban' from 'x'","scope":"Ip","type":"ban","value":"198.51.100.77"}]}"#,
        )
        .unwrap();
        assert!(s.deleted.is_none());
        assert_eq!(s.new.unwrap()[0].value.as_deref(), Some("198.51.100.77"));
        let s: DecisionStream = serde_json::from_str(r#"{"deleted":null,"new":null}"#).unwrap();
        assert!(s.new.is_none());
    }
}
