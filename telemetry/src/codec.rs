//! Page codecs: a page is one series' slots of one tier as integer columns.
//!
//! Every value is an integer in its series' unit (µs, bytes, °C, mW, …), quantised by the
//! sampler. A page whose slots hold at most one sample each (tier 0) is stored as two columns,
//! the value and its presence; an aggregate page as four, min, max, sum and count. Empty slots
//! repeat the previous value so that deltas stay small.
//!
//! The columns are encoded three ways — `pco`, zstd over zig-zag delta varints, and the plain
//! varints — and the smallest is kept: the codec byte in the segment's chunk directory says
//! which. `docs/telemetry.md` gives the bytes per sample measured for each.

use crate::Agg;

/// Plain zig-zag delta varints.
pub const RAW: u8 = 0;
/// zstd over the plain varints.
pub const ZSTD: u8 = 1;
/// `pco` (one standalone chunk per column).
pub const PCO: u8 = 2;

/// Columns: value and presence (`count` 0 or 1, min = max = sum).
const SINGLE: u8 = 1;
/// Columns: min, max, sum, count.
const FULL: u8 = 4;

/// Why a chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("page chunk is damaged: {0}")]
pub struct Damaged(pub String);

fn columns(aggs: &[Agg]) -> (u8, Vec<Vec<i64>>) {
    let single = aggs
        .iter()
        .all(|a| a.count == 0 || (a.count == 1 && a.min == a.max && a.min == a.sum));
    let mut last = Agg::default();
    let filled = aggs.iter().map(|a| {
        if a.count > 0 {
            last = *a;
        }
        (last, a.count)
    });
    if single {
        let (v, c): (Vec<i64>, Vec<i64>) = filled.map(|(l, c)| (l.sum, i64::from(c))).unzip();
        (SINGLE, vec![v, c])
    } else {
        let mut cols: Vec<Vec<i64>> = (0..4).map(|_| Vec::with_capacity(aggs.len())).collect();
        for (l, c) in filled {
            cols[0].push(l.min);
            cols[1].push(l.max);
            cols[2].push(l.sum);
            cols[3].push(i64::from(c));
        }
        (FULL, cols)
    }
}

fn from_columns(mode: u8, cols: &[Vec<i64>], n: usize) -> Result<Vec<Agg>, Damaged> {
    let want = match mode {
        SINGLE => 2,
        FULL => 4,
        m => return Err(Damaged(format!("unknown column layout {m}"))),
    };
    if cols.len() != want || cols.iter().any(|c| c.len() != n) {
        return Err(Damaged(
            "column count or length does not match the page".into(),
        ));
    }
    let count = |v: i64| u32::try_from(v).map_err(|_| Damaged("a count is out of range".into()));
    (0..n)
        .map(|i| {
            Ok(if mode == SINGLE {
                match cols[1][i] {
                    0 => Agg::default(),
                    1 => Agg::one(cols[0][i]),
                    _ => return Err(Damaged("a presence flag is neither 0 nor 1".into())),
                }
            } else {
                let c = count(cols[3][i])?;
                if c == 0 {
                    Agg::default()
                } else {
                    Agg {
                        min: cols[0][i],
                        max: cols[1][i],
                        sum: cols[2][i],
                        count: c,
                    }
                }
            })
        })
        .collect()
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn raw_encode(mode: u8, cols: &[Vec<i64>]) -> Vec<u8> {
    let mut out = vec![mode];
    for c in cols {
        let mut prev = 0i64;
        for &v in c {
            put_varint(&mut out, zigzag(v.wrapping_sub(prev)));
            prev = v;
        }
    }
    out
}

/// The column layout byte a chunk starts with, and its column count.
fn layout(buf: &[u8]) -> Result<(u8, usize), Damaged> {
    match buf.first() {
        None => Err(Damaged("empty chunk".into())),
        Some(&SINGLE) => Ok((SINGLE, 2)),
        Some(&m) => Ok((m, 4)),
    }
}

fn raw_decode(buf: &[u8], n: usize) -> Result<(u8, Vec<Vec<i64>>), Damaged> {
    let (mode, ncols) = layout(buf)?;
    let mut pos = 1;
    let mut cols = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let mut prev = 0i64;
        let mut c = Vec::with_capacity(n);
        for _ in 0..n {
            let d = get_varint(buf, &mut pos).ok_or_else(|| Damaged("truncated varint".into()))?;
            prev = prev.wrapping_add(unzigzag(d));
            c.push(prev);
        }
        cols.push(c);
    }
    if pos != buf.len() {
        return Err(Damaged("trailing bytes after the columns".into()));
    }
    Ok((mode, cols))
}

fn pco_encode(mode: u8, cols: &[Vec<i64>]) -> Option<Vec<u8>> {
    let mut out = vec![mode];
    for c in cols {
        let b = pco::standalone::simple_compress(c, &pco::ChunkConfig::default()).ok()?;
        put_varint(&mut out, b.len() as u64);
        out.extend_from_slice(&b);
    }
    Some(out)
}

fn pco_decode(buf: &[u8], n: usize) -> Result<(u8, Vec<Vec<i64>>), Damaged> {
    let (mode, ncols) = layout(buf)?;
    let mut pos = 1;
    let mut cols = Vec::with_capacity(ncols);
    for _ in 0..ncols {
        let len = get_varint(buf, &mut pos).ok_or_else(|| Damaged("truncated length".into()))?;
        let end = pos
            .checked_add(len as usize)
            .filter(|e| *e <= buf.len())
            .ok_or_else(|| Damaged("a column runs past the chunk".into()))?;
        let c: Vec<i64> = pco::standalone::simple_decompress(&buf[pos..end])
            .map_err(|e| Damaged(format!("pco: {e}")))?;
        if c.len() != n {
            return Err(Damaged("a column has the wrong length".into()));
        }
        cols.push(c);
        pos = end;
    }
    Ok((mode, cols))
}

fn zstd(raw: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        // One context per thread: making one costs more than compressing a page.
        static CCTX: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Compressor::new(3).ok();
        }
        c.as_mut()?.compress(raw).ok()
    })
}

/// Encodes a page: the codec byte and the chunk, the smallest of the three encodings.
pub fn encode(aggs: &[Agg]) -> (u8, Vec<u8>) {
    let (mode, cols) = columns(aggs);
    let raw = raw_encode(mode, &cols);
    let mut best = (RAW, raw);
    if let Some(z) = zstd(&best.1) {
        if z.len() < best.1.len() {
            best = (ZSTD, z);
        }
    }
    if let Some(p) = pco_encode(mode, &cols) {
        if p.len() < best.1.len() {
            best = (PCO, p);
        }
    }
    best
}

/// Encodes a page with one given codec (for the bench's codec table).
pub fn encode_with(codec: u8, aggs: &[Agg]) -> Option<Vec<u8>> {
    let (mode, cols) = columns(aggs);
    match codec {
        RAW => Some(raw_encode(mode, &cols)),
        ZSTD => zstd(&raw_encode(mode, &cols)),
        PCO => pco_encode(mode, &cols),
        _ => None,
    }
}

/// Decodes a chunk of `n` slots.
pub fn decode(codec: u8, buf: &[u8], n: usize) -> Result<Vec<Agg>, Damaged> {
    let (mode, cols) = match codec {
        RAW => raw_decode(buf, n)?,
        ZSTD => {
            // A raw page is at most 1 + 4 columns of n ten-byte varints.
            let raw = zstd::bulk::decompress(buf, 1 + 4 * 10 * n)
                .map_err(|e| Damaged(format!("zstd: {e}")))?;
            raw_decode(&raw, n)?
        }
        PCO => pco_decode(buf, n)?,
        c => return Err(Damaged(format!("unknown codec {c}"))),
    };
    from_columns(mode, &cols, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(f: impl Fn(usize) -> Agg, n: usize) -> Vec<Agg> {
        (0..n).map(f).collect()
    }

    #[test]
    fn every_codec_round_trips_single_and_aggregate_pages_with_gaps() {
        let single = page(
            |i| {
                if i % 7 == 3 {
                    Agg::default()
                } else {
                    Agg::one((i as i64 * 37) % 11 - 5)
                }
            },
            300,
        );
        let full = page(
            |i| {
                if i == 5 {
                    Agg::default()
                } else {
                    Agg {
                        min: -(i as i64),
                        max: i as i64 * 1000,
                        sum: i64::MAX / 2 + i as i64,
                        count: 60,
                    }
                }
            },
            60,
        );
        for p in [&single, &full] {
            for codec in [RAW, ZSTD, PCO] {
                let b = encode_with(codec, p).expect("encodes");
                assert_eq!(&decode(codec, &b, p.len()).expect("decodes"), p, "{codec}");
            }
            let (c, b) = encode(p);
            assert_eq!(&decode(c, &b, p.len()).expect("decodes"), p);
        }
    }

    #[test]
    fn a_flat_page_costs_a_few_bytes_and_damage_is_refused_not_misread() {
        let flat = page(|_| Agg::one(42), 300);
        let (c, b) = encode(&flat);
        assert!(b.len() < 40, "{} bytes with codec {c}", b.len());
        for codec in [RAW, ZSTD, PCO] {
            let b = encode_with(codec, &flat).expect("encodes");
            assert!(decode(codec, &b[..b.len() - 1], 300).is_err());
            assert!(decode(codec, &b, 299).is_err());
        }
        assert!(decode(9, &b, 300).is_err());
    }
}
