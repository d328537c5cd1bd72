//! A reader of the OpenMetrics text the daemon's own `/metrics` renders, so that the sampler
//! records every series `/metrics` exposes without a second list of them.

use std::collections::BTreeMap;

/// One metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Family name (`airlock_inference_requests`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `info`, … as declared by `# TYPE`.
    pub kind: String,
    /// `# UNIT`, when given.
    pub unit: Option<String>,
    /// Its samples.
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name (`…_total`, `…_bucket`, `…_sum`, `…_count`).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let eq = rest.find('=')?;
        let k = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].strip_prefix('"')?;
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                c => v.push(c),
            }
        };
        labels.insert(k, v);
        rest = &rest[end + 1..];
    }
}

/// Parses the text; lines it does not understand are skipped.
pub fn parse(text: &str) -> Vec<Family> {
    let mut families: Vec<Family> = Vec::new();
    for line in text.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut it = meta.splitn(3, ' ');
            let (what, name, rest) = (it.next(), it.next(), it.next());
            match (what, name) {
                (Some("TYPE"), Some(name)) => families.push(Family {
                    name: name.to_string(),
                    kind: rest.unwrap_or("unknown").trim().to_string(),
                    unit: None,
                    samples: Vec::new(),
                }),
                (Some("UNIT"), Some(name)) => {
                    if let Some(f) = families.last_mut().filter(|f| f.name == name) {
                        f.unit = rest.map(|u| u.trim().to_string());
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            match parse_labels(&line[name_end + 1..]) {
                Some(x) => x,
                None => continue,
            }
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let Some(value) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        let fam = match families.last_mut() {
            Some(f) if name.starts_with(f.name.as_str()) => f,
            _ => {
                families.push(Family {
                    name: name.to_string(),
                    kind: "unknown".into(),
                    unit: None,
                    samples: Vec::new(),
                });
                families.last_mut().expect("just pushed")
            }
        };
        fam.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    families
}

/// The `q`-quantile (0–1) of the observations between two readings of a histogram's cumulative
/// buckets (`(le, count)` sorted by `le`), interpolated linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` when nothing was observed.
pub fn quantile(q: f64, before: &[(f64, f64)], now: &[(f64, f64)]) -> Option<f64> {
    let delta: Vec<(f64, f64)> = now
        .iter()
        .map(|&(le, c)| {
            let b = before
                .iter()
                .find(|(l, _)| *l == le)
                .map(|x| x.1)
                .unwrap_or(0.0);
            // A reset (the count went down) counts what is there now.
            (le, if c >= b { c - b } else { c })
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, c) in &delta {
        if c >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = c - lower.1;
            let frac = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, c);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP airlock_inference_requests Inference requests.
# TYPE airlock_inference_requests counter
airlock_inference_requests_total{model="demo",version="1",outcome="success"} 7
# HELP airlock_request_duration_seconds End-to-end inference latency.
# TYPE airlock_request_duration_seconds histogram
airlock_request_duration_seconds_sum{model="demo"} 0.5
airlock_request_duration_seconds_count{model="demo"} 10
airlock_request_duration_seconds_bucket{le="0.001",model="demo"} 5
airlock_request_duration_seconds_bucket{le="0.002",model="demo"} 10
airlock_request_duration_seconds_bucket{le="+Inf",model="demo"} 10
# TYPE airlock_queue_depth gauge
airlock_queue_depth{model="a \"quoted\" name"} 3
# EOF
"#;

    #[test]
    fn the_daemons_own_text_parses_into_families() {
        let f = parse(TEXT);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].kind, "counter");
        assert_eq!(f[0].samples[0].value, 7.0);
        assert_eq!(f[0].samples[0].labels["outcome"], "success");
        assert_eq!(f[1].samples.len(), 5);
        assert_eq!(f[1].samples[4].labels["le"], "+Inf");
        assert_eq!(f[2].samples[0].labels["model"], "a \"quoted\" name");
    }

    #[test]
    fn quantiles_come_from_the_increase_between_two_readings() {
        let inf = f64::INFINITY;
        let before = [(0.001, 5.0), (0.002, 10.0), (inf, 10.0)];
        let now = [(0.001, 5.0), (0.002, 20.0), (inf, 20.0)];
        // All ten new observations fell between 1 and 2 ms.
        let p50 = quantile(0.5, &before, &now).expect("observed");
        assert!((p50 - 0.0015).abs() < 1e-9, "{p50}");
        assert_eq!(quantile(0.5, &now, &now), None);
        // After a reset, what is there now counts.
        let p99 = quantile(0.99, &now, &before).expect("observed");
        assert!(p99 > 0.001 && p99 <= 0.002);
    }
}
