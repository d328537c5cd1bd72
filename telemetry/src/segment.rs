//! Segment files: `tier<K>/<start>.seg`, a 16-byte header then blocks, one per page span.
//!
//! ```text
//! header  "ALTSEG01" | tier u8 | 0 0 0 | step u32 LE
//! block   "BLK1" | dir_len u32 | dir_crc u32 | dir | chunk bytes …
//! dir     start_slot u64 | n_slots u32 | n_chunks u32 | (series u32, codec u8, len u32, crc u32) × n_chunks
//! ```
//!
//! All integers little-endian. A block's directory is checked when the segment is scanned; each
//! chunk when it is read. Blocks are only appended; a segment whose scan finds a bad or torn
//! block keeps its blocks before it and is never appended to again.

use crate::codec;
use crate::Agg;

/// Segment file magic.
pub const MAGIC: &[u8; 8] = b"ALTSEG01";
/// Header size.
pub const HEADER: usize = 16;
const BLOCK_MAGIC: &[u8; 4] = b"BLK1";
const DIR_FIXED: usize = 16;
const DIR_ENTRY: usize = 13;

/// One series' chunk inside a block.
#[derive(Clone, Debug)]
pub struct ChunkRef {
    /// Series id.
    pub series: u32,
    /// Codec byte.
    pub codec: u8,
    /// Offset of the chunk in the file.
    pub offset: u64,
    /// Length.
    pub len: u32,
    /// CRC-32 of the chunk.
    pub crc: u32,
}

/// A block found in a segment.
#[derive(Clone, Debug)]
pub struct BlockRef {
    /// First slot (in the tier's steps since the epoch).
    pub start_slot: u64,
    /// Slots in the block.
    pub n_slots: u32,
    /// Chunks, sorted by series.
    pub chunks: Vec<ChunkRef>,
}

impl BlockRef {
    /// The chunk of a series.
    pub fn chunk(&self, series: u32) -> Option<&ChunkRef> {
        self.chunks
            .binary_search_by_key(&series, |c| c.series)
            .ok()
            .map(|i| &self.chunks[i])
    }
}

/// The segment file header.
pub fn header(tier: u8, step: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[tier, 0, 0, 0]);
    h.extend_from_slice(&step.to_le_bytes());
    h
}

/// Encodes pages (sorted by series) into chunks: (series, codec, bytes).
pub fn encode_chunks(pages: &[(u32, &[Agg])]) -> Vec<(u32, u8, Vec<u8>)> {
    pages
        .iter()
        .map(|(id, aggs)| {
            let (c, b) = codec::encode(aggs);
            (*id, c, b)
        })
        .collect()
}

/// Bytes a block of these chunks takes.
pub fn block_len(chunks: &[(u32, u8, Vec<u8>)]) -> usize {
    12 + DIR_FIXED + DIR_ENTRY * chunks.len() + chunks.iter().map(|c| c.2.len()).sum::<usize>()
}

/// A block of encoded chunks starting at `base` in the file: its bytes and the block as the
/// index will know it.
pub fn encode_block(
    start_slot: u64,
    n_slots: u32,
    chunks: &[(u32, u8, Vec<u8>)],
    base: u64,
) -> (Vec<u8>, BlockRef) {
    let mut dir = Vec::with_capacity(DIR_FIXED + DIR_ENTRY * chunks.len());
    dir.extend_from_slice(&start_slot.to_le_bytes());
    dir.extend_from_slice(&n_slots.to_le_bytes());
    dir.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for (id, c, b) in chunks {
        dir.extend_from_slice(&id.to_le_bytes());
        dir.push(*c);
        dir.extend_from_slice(&(b.len() as u32).to_le_bytes());
        dir.extend_from_slice(&crc32fast::hash(b).to_le_bytes());
    }
    let mut out =
        Vec::with_capacity(12 + dir.len() + chunks.iter().map(|c| c.2.len()).sum::<usize>());
    out.extend_from_slice(BLOCK_MAGIC);
    out.extend_from_slice(&(dir.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&dir).to_le_bytes());
    out.extend_from_slice(&dir);
    let mut offset = base + out.len() as u64;
    let mut refs = Vec::with_capacity(chunks.len());
    for (id, c, b) in chunks {
        refs.push(ChunkRef {
            series: *id,
            codec: *c,
            offset,
            len: b.len() as u32,
            crc: crc32fast::hash(b),
        });
        offset += b.len() as u64;
        out.extend_from_slice(b);
    }
    refs.sort_by_key(|c| c.series);
    (
        out,
        BlockRef {
            start_slot,
            n_slots,
            chunks: refs,
        },
    )
}

/// What scanning a segment found.
pub struct Scan {
    /// Tier and step from the header.
    pub tier: u8,
    /// Step in seconds.
    pub step: u32,
    /// Intact blocks, in file order.
    pub blocks: Vec<BlockRef>,
    /// What was wrong after `end`, if anything.
    pub damage: Option<String>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

/// Scans a segment's bytes. Chunks are checked in full only for the last block (the one a
/// crash could have cut short); the others when they are read.
pub fn scan(buf: &[u8]) -> Result<Scan, String> {
    if buf.len() < HEADER || &buf[..8] != MAGIC {
        return Err("not a telemetry segment (bad header)".into());
    }
    let tier = buf[8];
    let step = u32_at(buf, 12);
    let mut pos = HEADER;
    let mut blocks = Vec::new();
    let mut damage = None;
    while pos < buf.len() {
        let at = pos;
        let fail = |what: &str| Some(format!("{what} at offset {at}"));
        if buf.len() - pos < 12 || &buf[pos..pos + 4] != BLOCK_MAGIC {
            damage = fail(if buf.len() - pos < 12 {
                "a torn block"
            } else {
                "a damaged block header"
            });
            break;
        }
        let dlen = u32_at(buf, pos + 4) as usize;
        let dcrc = u32_at(buf, pos + 8);
        if buf.len() - pos - 12 < dlen {
            damage = fail("a torn block");
            break;
        }
        let dir = &buf[pos + 12..pos + 12 + dlen];
        if dlen < DIR_FIXED || crc32fast::hash(dir) != dcrc {
            damage = fail("a damaged block directory");
            break;
        }
        let start_slot = u64::from_le_bytes(dir[..8].try_into().unwrap_or_default());
        let n_slots = u32_at(dir, 8);
        let n = u32_at(dir, 12) as usize;
        if dlen != DIR_FIXED + n * DIR_ENTRY {
            damage = fail("a block directory of the wrong size");
            break;
        }
        let mut offset = (pos + 12 + dlen) as u64;
        let mut chunks = Vec::with_capacity(n);
        for i in 0..n {
            let e = &dir[DIR_FIXED + i * DIR_ENTRY..DIR_FIXED + (i + 1) * DIR_ENTRY];
            let len = u32_at(e, 5);
            chunks.push(ChunkRef {
                series: u32_at(e, 0),
                codec: e[4],
                offset,
                len,
                crc: u32_at(e, 9),
            });
            offset += u64::from(len);
        }
        if offset > buf.len() as u64 {
            damage = fail("a torn block");
            break;
        }
        let last = offset == buf.len() as u64;
        if last
            && chunks.iter().any(|c| {
                let b = &buf[c.offset as usize..(c.offset + u64::from(c.len)) as usize];
                crc32fast::hash(b) != c.crc
            })
        {
            damage = fail("a torn block");
            break;
        }
        chunks.sort_by_key(|c| c.series);
        blocks.push(BlockRef {
            start_slot,
            n_slots,
            chunks,
        });
        pos = offset as usize;
    }
    Ok(Scan {
        tier,
        step,
        blocks,
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scan_back_and_a_torn_or_damaged_block_keeps_those_before_it() {
        let a: Vec<Agg> = (0..300).map(|i| Agg::one(i % 5)).collect();
        let b: Vec<Agg> = (0..300).map(|i| Agg::one(1000 - i)).collect();
        let mut file = header(0, 1);
        for start in [0u64, 300] {
            let chunks = encode_chunks(&[(2, &a[..]), (1, &b[..])]);
            let (bytes, _) = encode_block(start, 300, &chunks, file.len() as u64);
            assert_eq!(bytes.len(), block_len(&chunks));
            file.extend_from_slice(&bytes);
        }
        let s = scan(&file).expect("scans");
        assert_eq!((s.blocks.len(), s.damage.as_deref()), (2, None));
        let c = s.blocks[1].chunk(2).expect("chunk");
        let got = codec::decode(
            c.codec,
            &file[c.offset as usize..(c.offset + u64::from(c.len)) as usize],
            300,
        )
        .expect("decodes");
        assert_eq!(got, a);
        let torn = scan(&file[..file.len() - 3]).expect("scans");
        assert_eq!(torn.blocks.len(), 1);
        assert!(torn.damage.expect("damage").contains("torn"));
        let mut bad = file.clone();
        bad[HEADER + 20] ^= 0xff;
        let d = scan(&bad).expect("scans");
        assert_eq!(d.blocks.len(), 0);
        assert!(d.damage.expect("damage").contains("directory"));
        assert!(scan(b"not a segment at all").is_err());
    }
}
