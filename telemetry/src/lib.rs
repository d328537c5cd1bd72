//! `airlock-telemetry`: the appliance's own metric history.
//!
//! Every series is sampled once per tier-0 step (1 s) as an integer in its unit and kept in
//! three **fixed-step tiers** (1 s for 1 h, 1 min for 7 d, 1 h for 1 y by default). A slot of
//! every tier holds an [`Agg`] — min, max, sum and count — so that averages, peaks and, for
//! counters (stored as their increase per tier-0 step), rates and increases stay exact when
//! slots are merged into coarser ones.
//!
//! On disk (`docs/telemetry.md`): a **journal** (`wal`) of the newest tier-0 samples, written
//! every `flush_interval`; per tier, **append-only segment files** of compressed pages (one
//! block per page span: 5 min, 1 h, 1 d), each block's directory and every chunk checksummed;
//! and an append-only **catalog** of series definitions. A tier's page that is still filling
//! lives in memory and is rebuilt from the tier below (and the journal) when the store opens,
//! so a crash loses at most the samples not yet in the journal.
//!
//! Every byte written counts against one budget, checked before the write; the oldest segment
//! goes first. A write that fails (a full disk, a directory that became unwritable) or a damaged
//! file pauses or blanks history only, with one warning and a flag in [`Health`]; this crate is
//! never on the inference path (the daemon feeds it from a thread of its own).
//!
//! Invariants: nothing is ever written after damaged bytes (a segment with a bad frame is
//! sealed); a chunk is decoded only after its CRC matched; a query reads at most
//! `MAX_POINTS` buckets per series and `MAX_QUERY_SERIES` series.
#![deny(missing_docs)]

pub mod codec;
mod frame;
pub mod openmetrics;
mod segment;
mod store;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use store::{Health, Options, Point, QueryResult, Store, StoreError, TierUsage};

/// Most points one query may ask for, per series.
pub const MAX_POINTS: u32 = 2000;
/// Most series one query may return.
pub const MAX_QUERY_SERIES: usize = 64;

/// The aggregate one slot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Agg {
    /// Smallest sample.
    pub min: i64,
    /// Largest sample.
    pub max: i64,
    /// Sum of the samples.
    pub sum: i64,
    /// Samples merged (0: the slot is empty).
    pub count: u32,
}

impl Agg {
    /// One sample.
    pub fn one(v: i64) -> Agg {
        Agg {
            min: v,
            max: v,
            sum: v,
            count: 1,
        }
    }

    /// Merges another aggregate into this one.
    pub fn merge(&mut self, o: &Agg) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum = self.sum.saturating_add(o.sum);
        self.count = self.count.saturating_add(o.count);
    }
}

/// How a series' values are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A level (queue depth, temperature, a latency percentile).
    Gauge,
    /// A counter, stored as its increase per tier-0 step (reset-aware at the source): a
    /// bucket's `sum` is the exact increase, its `avg` the rate per step.
    Counter,
}

/// A series: a metric name, its labels, kind and unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesDef {
    /// Metric name (`airlock_inference_requests`, `host_cpu_busy`, …).
    pub name: String,
    /// Labels, sorted.
    pub labels: BTreeMap<String, String>,
    /// Gauge or counter.
    pub kind: Kind,
    /// Unit of the stored integers (`us`, `bytes`, `celsius`, `mW`, `percent`, `1`, …).
    pub unit: String,
}

impl SeriesDef {
    /// A series without labels.
    pub fn new(name: &str, kind: Kind, unit: &str) -> SeriesDef {
        SeriesDef {
            name: name.into(),
            labels: BTreeMap::new(),
            kind,
            unit: unit.into(),
        }
    }

    /// The same series with one more label.
    pub fn label(mut self, k: &str, v: &str) -> SeriesDef {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// The canonical key: `name{k="v",…}` (labels sorted, `"` and `\` escaped).
    pub fn key(&self) -> String {
        let mut s = self.name.clone();
        if !self.labels.is_empty() {
            s.push('{');
            for (i, (k, v)) in self.labels.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(k);
                s.push_str("=\"");
                for c in v.chars() {
                    if c == '"' || c == '\\' {
                        s.push('\\');
                    }
                    s.push(c);
                }
                s.push('"');
            }
            s.push('}');
        }
        s
    }
}

impl fmt::Display for SeriesDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A query's series selector: a metric name and labels that must match exactly
/// (`airlock_queue_depth{model="demo"}`); a name ending in `*` matches by prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// Metric name, or a prefix when `prefix` is set.
    pub name: String,
    /// `name` is a prefix (it was written with a trailing `*`).
    pub prefix: bool,
    /// Labels that must be present with these values.
    pub labels: BTreeMap<String, String>,
}

/// A selector that could not be parsed; the message names what was wrong (never echoing it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("series selector: {0}")]
pub struct BadSelector(pub &'static str);

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl Selector {
    /// Parses `name`, `name*` or `name{k="v",…}`.
    pub fn parse(s: &str) -> Result<Selector, BadSelector> {
        if s.len() > 1024 {
            return Err(BadSelector("longer than 1024 bytes"));
        }
        let (head, rest) = match s.find('{') {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        };
        let (name, prefix) = match head.strip_suffix('*') {
            Some(p) => (p, true),
            None => (head, false),
        };
        if !(name_ok(name) || (prefix && name.is_empty())) {
            return Err(BadSelector(
                "the metric name must be letters, digits, '_' or ':' (a trailing '*' matches by prefix)",
            ));
        }
        let mut labels = BTreeMap::new();
        if let Some(rest) = rest {
            let body = rest
                .strip_suffix('}')
                .ok_or(BadSelector("the label list does not end with '}'"))?;
            let mut chars = body.chars().peekable();
            loop {
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
                if chars.peek().is_none() {
                    break;
                }
                let mut k = String::new();
                while let Some(&c) = chars.peek() {
                    if c == '=' {
                        break;
                    }
                    k.push(c);
                    chars.next();
                }
                let k = k.trim().to_string();
                if !name_ok(&k) {
                    return Err(BadSelector("a label name must be letters, digits or '_'"));
                }
                if chars.next() != Some('=') || chars.next() != Some('"') {
                    return Err(BadSelector("a label must be written name=\"value\""));
                }
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(BadSelector("a label value is not closed with '\"'")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => v.push(c),
                            None => return Err(BadSelector("a label value ends in '\\'")),
                        },
                        Some(c) => v.push(c),
                    }
                }
                if labels.insert(k, v).is_some() {
                    return Err(BadSelector("a label is given twice"));
                }
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
                match chars.next() {
                    None => break,
                    Some(',') => continue,
                    Some(_) => return Err(BadSelector("labels must be separated by ','")),
                }
            }
        }
        Ok(Selector {
            name: name.to_string(),
            prefix,
            labels,
        })
    }

    /// Whether a series matches.
    pub fn matches(&self, d: &SeriesDef) -> bool {
        let name = if self.prefix {
            d.name.starts_with(&self.name)
        } else {
            d.name == self.name
        };
        name && self
            .labels
            .iter()
            .all(|(k, v)| d.labels.get(k).is_some_and(|x| x == v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_match_and_refuse_without_echoing() {
        let s =
            Selector::parse(r#"airlock_queue_depth{model="de\"mo", version="1"}"#).expect("parses");
        assert_eq!(s.labels["model"], "de\"mo");
        let d = SeriesDef::new("airlock_queue_depth", Kind::Gauge, "1")
            .label("model", "de\"mo")
            .label("version", "1")
            .label("x", "y");
        assert!(s.matches(&d));
        assert_eq!(
            d.key(),
            r#"airlock_queue_depth{model="de\"mo",version="1",x="y"}"#
        );
        assert!(Selector::parse("gpu_*")
            .expect("prefix")
            .matches(&SeriesDef::new("gpu_temperature", Kind::Gauge, "celsius")));
        for bad in [
            "",
            "a b",
            "1abc",
            "x{model=demo}",
            "x{model=\"a\"",
            "x{model=\"a\",model=\"b\"}",
            "x{m=\"a\"; n=\"b\"}",
        ] {
            let e = Selector::parse(bad).expect_err(bad).to_string();
            assert!(!bad.is_empty() && !e.contains(bad) || bad.is_empty(), "{e}");
        }
    }

    #[test]
    fn aggregates_merge_exactly_and_ignore_empty_slots() {
        let mut a = Agg::default();
        a.merge(&Agg::default());
        assert_eq!(a.count, 0);
        a.merge(&Agg::one(5));
        a.merge(&Agg::one(-3));
        a.merge(&Agg {
            min: 1,
            max: 9,
            sum: 20,
            count: 4,
        });
        assert_eq!(
            a,
            Agg {
                min: -3,
                max: 9,
                sum: 22,
                count: 6
            }
        );
    }
}
