//! Human-friendly units in config: sizes (`8MiB`) and durations (`250ms`, via `humantime`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// A size in bytes, written as a number or as `512`, `64KiB`, `8MiB`, `1GiB`, `10kB`, `5MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// A duration written like `250ms`, `2s`, `1m 30s` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

/// Why a size or a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid size {0:?}: expected a number with a unit like 8MiB")]
    SizeNumber(String),
    #[error("unknown size unit {unit:?} in {input:?}: use B, KiB, MiB, GiB, kB, MB or GB")]
    SizeUnit { unit: String, input: String },
    #[error("size {0:?} is too large")]
    SizeTooLarge(String),
    #[error("invalid duration {input:?}: {reason} (write e.g. 250ms, 2s, 1m, 30d)")]
    Duration { input: String, reason: String },
}

// === impl ByteSize ===

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, UnitError> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| UnitError::SizeNumber(s.into()))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => return Err(UnitError::SizeUnit { unit: other.into(), input: s.into() }),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| UnitError::SizeTooLarge(s.into()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            N(u64),
            S(String),
        }
        match Repr::deserialize(d)? {
            Repr::N(n) => Ok(ByteSize(n)),
            Repr::S(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["integer", "string"],
            "minimum": 0,
            "description": "A size in bytes: 512, 64KiB, 8MiB, 1GiB, 10kB, 5MB."
        })
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

// === impl HumanDuration ===

impl std::str::FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, UnitError> {
        humantime::parse_duration(s).map(HumanDuration).map_err(|e| UnitError::Duration { input: s.into(), reason: e.to_string() })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with a unit, like 250ms, 30s or 5m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                v.parse().map_err(E::custom)
            }
            // A bare number is ambiguous (Kong writes milliseconds, most tools seconds): say how to write it.
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}ms or {v}s, not {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}ms or {v}s, not {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write {v}s, not {v}")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with a unit: 250ms, 30s, 5m, 1h, 1d.",
            "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zµ]+(\\s*[0-9]+(\\.[0-9]+)?\\s*[a-zµ]+)*\\s*$"
        })
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Duration {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_as_a_duration_says_how_to_write_it() {
        let e = serde_norway::from_str::<HumanDuration>("30000").unwrap_err().to_string();
        assert!(e.contains("write 30000ms or 30000s"), "{e}");
        assert_eq!(serde_norway::from_str::<HumanDuration>("\"250ms\"").unwrap().0, Duration::from_millis(250));
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("8MiB").unwrap().0, 8 << 20);
        assert_eq!(ByteSize::parse("10kB").unwrap().0, 10_000);
        assert_eq!(ByteSize::parse("512").unwrap().0, 512);
        assert!(ByteSize::parse("8 parsecs").unwrap_err().to_string().contains("unknown size unit"));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999GiB").unwrap_err().to_string().contains("too large"));
    }
}
