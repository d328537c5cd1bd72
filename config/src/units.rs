//! Human-friendly units for configuration values: byte sizes (`"2GiB"`) and durations (`"7d"`).
//!
//! Invariant: a value that does not parse is a deserialization error that says what is allowed,
//! so it surfaces with the key and line of the offending setting.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A size in bytes, written as an integer or a string with a unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

fn parse_with_units(s: &str, units: &[(&str, u64)]) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let unit = unit.trim();
    let mult = units.iter().find(|(u, _)| *u == unit)?.1;
    n.checked_mul(mult)
}

const SIZE_UNITS: [(&str, u64); 6] = [
    ("", 1),
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte size: an integer, or a string such as \"512MiB\" (units B, KiB, MiB, GiB, TiB)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_with_units(v, &SIZE_UNITS)
                    .map(ByteSize)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as a string with a unit: `"90s"`, `"15m"`, `"36h"`, `"7d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(std::time::Duration);

impl HumanDuration {
    /// A duration of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        HumanDuration(std::time::Duration::from_secs(secs))
    }
    /// A duration of whole microseconds.
    pub const fn from_micros(us: u64) -> Self {
        HumanDuration(std::time::Duration::from_micros(us))
    }
    /// As a standard duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

/// Duration units in microseconds.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("us", 1),
    ("ms", 1_000),
    ("s", 1_000_000),
    ("m", 60_000_000),
    ("h", 3_600_000_000),
    ("d", 86_400_000_000),
];

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_with_units(s, &DURATION_UNITS)
            .map(|us| HumanDuration(std::time::Duration::from_micros(us)))
            .ok_or_else(|| {
                format!("invalid duration {s:?} (allowed: a whole number with a unit us, ms, s, m, h or d, e.g. \"36h\", \"5ms\")")
            })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros() as u64;
        let (unit, size) = DURATION_UNITS
            .iter()
            .rev()
            .find(|(_, size)| us.is_multiple_of(*size) && us >= *size)
            .copied()
            .unwrap_or(("s", 1_000_000));
        write!(f, "{}{unit}", us / size)
    }
}
