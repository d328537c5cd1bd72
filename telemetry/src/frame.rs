//! Checksummed frames of the journal and the catalog: `len u32 LE | crc32 u32 LE | payload`
//! after an 8-byte magic.

/// Largest frame payload read back (a journal frame of 1 M series is about 12 MiB).
pub const MAX_FRAME: usize = 64 << 20;

/// Appends one frame.
pub fn put(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What reading a framed file found.
pub struct Frames<'a> {
    /// Payloads of the intact frames, in order.
    pub frames: Vec<&'a [u8]>,
    /// Offset just after the last intact frame: where appending may go on.
    pub end: usize,
    /// A frame after `end` did not check out: `Some("torn")` when it ran past the end of the
    /// file (a write cut short), `Some("checksum")` when its bytes were damaged.
    pub damage: Option<&'static str>,
}

/// Reads the frames of a file's bytes after the magic; `None` when the magic is wrong.
pub fn read<'a>(buf: &'a [u8], magic: &[u8; 8]) -> Option<Frames<'a>> {
    if buf.len() < 8 || &buf[..8] != magic {
        return None;
    }
    let mut pos = 8;
    let mut frames = Vec::new();
    let mut damage = None;
    while pos < buf.len() {
        if buf.len() - pos < 8 {
            damage = Some("torn");
            break;
        }
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(buf[pos + 4..pos + 8].try_into().unwrap_or_default());
        if len > MAX_FRAME {
            damage = Some("checksum");
            break;
        }
        if buf.len() - pos - 8 < len {
            damage = Some("torn");
            break;
        }
        let payload = &buf[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            damage = Some("checksum");
            break;
        }
        frames.push(payload);
        pos += 8 + len;
    }
    Some(Frames {
        frames,
        end: pos,
        damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_a_torn_tail_or_a_damaged_frame() {
        let mut f = b"TESTMAG1".to_vec();
        put(&mut f, b"one");
        put(&mut f, b"two");
        let whole = read(&f, b"TESTMAG1").expect("magic");
        assert_eq!(whole.frames, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!((whole.end, whole.damage), (f.len(), None));
        let torn = read(&f[..f.len() - 1], b"TESTMAG1").expect("magic");
        assert_eq!((torn.frames.len(), torn.damage), (1, Some("torn")));
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let r = read(&bad, b"TESTMAG1").expect("magic");
        assert_eq!((r.frames.len(), r.end, r.damage), (1, 19, Some("checksum")));
        assert!(read(&f, b"OTHERMAG").is_none());
    }
}
