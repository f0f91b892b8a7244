//! Human durations in config files and flags: `10s`, `100ms`, `2m`, `500us`, or a bare number of
//! milliseconds.

use std::time::Duration;

/// A duration that does not parse; the text says what was wrong and what would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadDuration(String);

pub fn parse_duration(s: &str) -> Result<Duration, BadDuration> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| BadDuration(format!("`{s}` is not a duration (try `10s` or `100ms`)")))?;
    let d = match unit.trim() {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        u => {
            return Err(BadDuration(format!(
                "`{s}` has an unknown unit `{u}` (use us, ms, s, m, h)"
            )))
        }
    };
    Ok(d)
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms > 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if d.as_micros().is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

/// serde adapter: durations as strings like `10s`.
pub mod serde_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => super::parse_duration(&s).map_err(serde::de::Error::custom),
            Raw::N(n) => Ok(Duration::from_millis(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("250").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
    }
}
