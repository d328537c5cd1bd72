//! The store: tiers of open pages in memory, the journal, segment files, the catalog, the byte
//! budget, crash recovery and queries.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec::{self, get_varint, put_varint, unzigzag, zigzag};
use crate::segment::{self, BlockRef};
use crate::{frame, Agg, Selector, SeriesDef, MAX_POINTS, MAX_QUERY_SERIES};

const WAL_MAGIC: &[u8; 8] = b"ALTWAL01";
const CATALOG_MAGIC: &[u8; 8] = b"ALTCAT01";
/// Pages per segment file, per tier (15 min, 1 d and 30 d with the default steps).
const PAGES_PER_SEGMENT: [u64; 3] = [3, 24, 30];

/// How the store is laid out and bounded.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory of the store.
    pub dir: PathBuf,
    /// (step, keep) per tier, in seconds.
    pub tiers: [(u64, u64); 3],
    /// Slots per page, per tier.
    pub page_slots: [u64; 3],
    /// The byte budget.
    pub max_bytes: u64,
    /// Seconds between journal writes.
    pub flush_interval: u64,
    /// Most series.
    pub max_series: u32,
}

impl Options {
    /// From the configuration's `[telemetry]` section.
    pub fn from_config(t: &airlock_config::Telemetry, data_dir: &Path) -> Options {
        Options {
            dir: t.dir_for(data_dir),
            tiers: t.tiers(),
            page_slots: airlock_config::Telemetry::PAGE_SLOTS,
            max_bytes: t.max_bytes.0,
            flush_interval: t.flush_interval.get().as_secs().max(1),
            max_series: t.max_series,
        }
    }
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("telemetry store: {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A query that cannot be answered as asked; the message names what was wrong.
    #[error("{0}")]
    BadQuery(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// One tier's share of the store.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TierUsage {
    /// Step in seconds.
    pub step: u64,
    /// Retention in seconds.
    pub keep: u64,
    /// Segment files.
    pub segments: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Series-slots stored in them (a page of N slots of one series counts N).
    pub slots: u64,
    /// Start of the oldest stored block (Unix seconds).
    pub oldest: Option<u64>,
}

/// What the store can say about itself (`/api/v1/telemetry/series`, `/metrics`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Health {
    /// Bytes of every file in the store's directory.
    pub bytes_used: u64,
    /// The budget.
    pub max_bytes: u64,
    /// Why history is not being written now (`None`: it is).
    pub paused: Option<String>,
    /// Segment files found damaged (their intact blocks are still read).
    pub damaged_segments: u64,
    /// Chunks whose checksum did not match when read (their slots read as empty).
    pub damaged_chunks: u64,
    /// Samples of series beyond `max_series`, dropped.
    pub dropped_samples: u64,
    /// Samples refused because the clock had gone back.
    pub clock_skips: u64,
    /// Writes that failed.
    pub write_errors: u64,
    /// Segments deleted to stay within the budget.
    pub budget_deletions: u64,
    /// Series known.
    pub series: u64,
    /// Per tier.
    pub tiers: Vec<TierUsage>,
}

/// One bucket of a query's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Point {
    /// Bucket start (Unix seconds).
    pub t: u64,
    /// Smallest sample.
    pub min: i64,
    /// Largest sample.
    pub max: i64,
    /// Sum of the samples (for a counter: its exact increase over the bucket).
    pub sum: i64,
    /// Samples in the bucket (tier-0 steps with data).
    pub count: u32,
}

/// One series' answer.
#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    /// The series.
    pub series: SeriesDef,
    /// Tier read.
    pub tier: usize,
    /// Bucket width in seconds.
    pub step: u64,
    /// Non-empty buckets, oldest first.
    pub points: Vec<Point>,
}

struct Segment {
    path: PathBuf,
    start: u64,
    end: u64,
    bytes: u64,
    sealed: bool,
    blocks: Vec<BlockRef>,
}

struct Open {
    start: u64,
    pages: BTreeMap<u32, Vec<Agg>>,
}

struct Tier {
    step: u64,
    keep: u64,
    page_slots: u64,
    dir: PathBuf,
    segments: Vec<Segment>,
    open: Open,
    /// Slots before this are in blocks (or were deleted).
    covered: u64,
}

impl Tier {
    fn page_secs(&self) -> u64 {
        self.step * self.page_slots
    }
}

type Fault = Box<dyn Fn(&str) + Send>;

/// The kinds of write, for what ends a pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    Catalog,
    Block,
    Journal,
}

/// The telemetry store. Not thread-safe by itself: the daemon holds it behind a mutex, fed by
/// one sampling thread.
pub struct Store {
    opts: Options,
    defs: Vec<Option<SeriesDef>>,
    by_key: HashMap<String, u32>,
    next_id: u32,
    tiers: Vec<Tier>,
    wal_path: PathBuf,
    wal_size: u64,
    pending: Vec<u8>,
    last_wal: u64,
    last_ts: Option<u64>,
    replaying: bool,
    used: u64,
    health: Health,
    /// The kind of write whose failure paused history.
    paused_by: Option<Written>,
    fault: Option<Fault>,
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => n += dir_bytes(&e.path()),
                Ok(m) => n += m.len(),
                Err(_) => {}
            }
        }
    }
    n
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A chunk's slots, read from its open segment file: `Err(Some(why))` when it is damaged,
/// `Err(None)` when it could not be read (the file went away: nothing to report).
fn read_aggs(f: &mut File, c: &segment::ChunkRef, n: u32) -> Result<Vec<Agg>, Option<String>> {
    let mut b = vec![0; c.len as usize];
    f.seek(SeekFrom::Start(c.offset))
        .and_then(|_| f.read_exact(&mut b))
        .map_err(|_| None)?;
    if crc32fast::hash(&b) != c.crc {
        return Err(Some("checksum mismatch".into()));
    }
    codec::decode(c.codec, &b, n as usize).map_err(|e| Some(e.to_string()))
}

impl Store {
    /// Opens (creating) the store, scans its files and rebuilds what was in memory: the open
    /// page of every tier, from the tier below and the journal. Damaged files are reported in
    /// [`Health`] and by one warning each; only a directory that cannot be created or read
    /// fails the open.
    pub fn open(opts: Options) -> Result<Store, StoreError> {
        create_private_dir(&opts.dir)?;
        let mut tiers = Vec::new();
        for (k, &(step, keep)) in opts.tiers.iter().enumerate() {
            let dir = opts.dir.join(format!("tier{k}"));
            create_private_dir(&dir)?;
            tiers.push(Tier {
                step: step.max(1),
                keep,
                page_slots: opts.page_slots[k].max(1),
                dir,
                segments: Vec::new(),
                open: Open {
                    start: 0,
                    pages: BTreeMap::new(),
                },
                covered: 0,
            });
        }
        let mut store = Store {
            wal_path: opts.dir.join("wal"),
            paused_by: None,
            health: Health {
                max_bytes: opts.max_bytes,
                ..Health::default()
            },
            opts,
            defs: Vec::new(),
            by_key: HashMap::new(),
            next_id: 0,
            tiers,
            wal_size: 0,
            pending: Vec::new(),
            last_wal: 0,
            last_ts: None,
            replaying: false,
            used: 0,
            fault: None,
        };
        store.load_catalog()?;
        let mut max_seen = store.next_id;
        for k in 0..store.tiers.len() {
            max_seen = max_seen.max(store.scan_tier(k)?);
        }
        // Ids seen in blocks whose definition was lost are never given out again.
        store.next_id = max_seen;
        store.used = dir_bytes(&store.opts.dir);
        store.recover()?;
        store.health.series = store.by_key.len() as u64;
        Ok(store)
    }

    /// Sets the fault hook crash tests use (`telemetry:block:tierK`: between the halves of a block
    /// write).
    pub fn set_fault(&mut self, f: Fault) {
        self.fault = Some(f);
    }

    fn load_catalog(&mut self) -> Result<(), StoreError> {
        let path = self.opts.dir.join("catalog");
        let buf = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::write(&path, CATALOG_MAGIC).map_err(io("create", &path))?;
                return Ok(());
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        #[derive(serde::Deserialize)]
        struct Entry {
            id: u32,
            #[serde(flatten)]
            def: SeriesDef,
        }
        let damaged = match frame::read(&buf, CATALOG_MAGIC) {
            Some(f) => {
                for p in &f.frames {
                    match serde_json::from_slice::<Entry>(p) {
                        Ok(e) => self.define(e.id, e.def),
                        Err(_) => self.health.damaged_segments += 1,
                    }
                }
                f.damage.map(|d| (d, f.end))
            }
            None => Some(("header", 0)),
        };
        if let Some((what, end)) = damaged {
            // Keep the damaged file for inspection and write the definitions that were read
            // into a new one, so that appending never follows damaged bytes.
            tracing::warn!(
                file = %path.display(),
                offset = end,
                "telemetry: the series catalog is damaged ({what}); the series defined after that point are unnamed until they are sampled again"
            );
            self.health.damaged_segments += 1;
            let _ = fs::rename(&path, self.opts.dir.join("catalog.damaged"));
            let mut out = CATALOG_MAGIC.to_vec();
            for (id, d) in self.defs.iter().enumerate() {
                if let Some(d) = d {
                    frame::put(&mut out, &catalog_entry(id as u32, d));
                }
            }
            write_atomically(&path, &out)?;
        }
        Ok(())
    }

    fn define(&mut self, id: u32, def: SeriesDef) {
        let i = id as usize;
        if i >= self.defs.len() {
            self.defs.resize(i + 1, None);
        }
        self.by_key.insert(def.key(), id);
        self.defs[i] = Some(def);
        self.next_id = self.next_id.max(id + 1);
    }

    /// The id of a series, defining it (one catalog append) when new. `None` when the series
    /// cannot be added: `max_series` reached, or the catalog could not be written (retried at
    /// the next call).
    pub fn series_id(&mut self, def: &SeriesDef) -> Option<u32> {
        let key = def.key();
        if let Some(id) = self.by_key.get(&key) {
            return Some(*id);
        }
        if self.by_key.len() >= self.opts.max_series as usize {
            if self.health.dropped_samples == 0 {
                tracing::warn!(
                    max_series = self.opts.max_series,
                    "telemetry: [telemetry] max_series reached; samples of further series are dropped"
                );
            }
            self.health.dropped_samples += 1;
            return None;
        }
        let id = self.next_id;
        let mut bytes = Vec::new();
        frame::put(&mut bytes, &catalog_entry(id, def));
        let path = self.opts.dir.join("catalog");
        let res = self.ensure(bytes.len() as u64).and_then(|()| {
            append(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
        match res {
            Ok(()) => {
                self.used += bytes.len() as u64;
                self.define(id, def.clone());
                self.health.series = self.by_key.len() as u64;
                self.resume(Written::Catalog);
                Some(id)
            }
            Err(why) => {
                self.trouble(Written::Catalog, why);
                None
            }
        }
    }

    /// Every series, with its id.
    pub fn series(&self) -> Vec<(u32, SeriesDef)> {
        self.defs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.clone().map(|d| (i as u32, d)))
            .collect()
    }

    fn scan_tier(&mut self, k: usize) -> Result<u32, StoreError> {
        let dir = self.tiers[k].dir.clone();
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(io("read", &dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        names.sort();
        let mut max_id = 0;
        let step = self.tiers[k].step;
        for path in names {
            let buf = match fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "telemetry: a segment cannot be read; its history is skipped");
                    self.health.damaged_segments += 1;
                    continue;
                }
            };
            let scan = match segment::scan(&buf) {
                Ok(s) if s.tier as usize == k && u64::from(s.step) == step => s,
                Ok(_) => {
                    tracing::warn!(file = %path.display(), "telemetry: a segment of another tier layout is skipped");
                    self.health.damaged_segments += 1;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), "telemetry: {e}; the segment is skipped");
                    self.health.damaged_segments += 1;
                    continue;
                }
            };
            let mut sealed = false;
            if let Some(d) = &scan.damage {
                tracing::warn!(
                    file = %path.display(),
                    "telemetry: segment has {d}; its blocks before that are kept and it is not written to again"
                );
                self.health.damaged_segments += 1;
                sealed = true;
            }
            let Some(first) = scan.blocks.first() else {
                continue;
            };
            let start = first.start_slot * step;
            let end = scan
                .blocks
                .iter()
                .map(|b| (b.start_slot + u64::from(b.n_slots)) * step)
                .max()
                .unwrap_or(start);
            for b in &scan.blocks {
                self.tiers[k].covered = self.tiers[k]
                    .covered
                    .max(b.start_slot + u64::from(b.n_slots));
                if let Some(c) = b.chunks.last() {
                    max_id = max_id.max(c.series + 1);
                }
            }
            let t = &mut self.tiers[k];
            if let Some(prev) = t.segments.last_mut() {
                prev.sealed = true;
            }
            t.segments.push(Segment {
                path,
                start,
                end,
                bytes: buf.len() as u64,
                sealed,
                blocks: scan.blocks,
            });
        }
        Ok(max_id)
    }

    /// Rebuilds the open pages: tier k's from the blocks of the tiers below it that are newer
    /// than its own, then every tier from the journal.
    fn recover(&mut self) -> Result<(), StoreError> {
        self.replaying = true;
        let covered_secs: Vec<u64> = self.tiers.iter().map(|t| t.covered * t.step).collect();
        for k in 1..self.tiers.len() {
            for j in (0..k).rev() {
                let lo = if j == k - 1 {
                    covered_secs[k]
                } else {
                    covered_secs[k].max(covered_secs[j + 1])
                };
                let step = self.tiers[j].step;
                let blocks: Vec<(PathBuf, BlockRef)> = self.tiers[j]
                    .segments
                    .iter()
                    .flat_map(|s| s.blocks.iter().map(move |b| (s.path.clone(), b.clone())))
                    .filter(|(_, b)| (b.start_slot + u64::from(b.n_slots)) * step > lo)
                    .collect();
                for (path, b) in blocks {
                    let Ok(mut f) = File::open(&path) else {
                        continue;
                    };
                    for c in &b.chunks {
                        let aggs = match read_aggs(&mut f, c, b.n_slots) {
                            Ok(a) => a,
                            Err(why) => {
                                if let Some(why) = why {
                                    self.damaged_chunk(&path, &why);
                                }
                                continue;
                            }
                        };
                        for (i, a) in aggs.iter().enumerate() {
                            let ts = (b.start_slot + i as u64) * step;
                            if a.count > 0 && ts >= lo {
                                self.absorb(k, ts, c.series, a);
                            }
                        }
                    }
                }
            }
        }
        // The journal.
        let (wal, on_disk) = match fs::read(&self.wal_path) {
            Ok(b) => {
                let n = b.len() as u64;
                (b, n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (WAL_MAGIC.to_vec(), 0),
            Err(e) => return Err(io("read", &self.wal_path)(e)),
        };
        let frames = frame::read(&wal, WAL_MAGIC);
        let t0 = covered_secs[0];
        if let Some(f) = &frames {
            if let Some(d) = f.damage {
                if d != "torn" {
                    tracing::warn!(file = %self.wal_path.display(), offset = f.end, "telemetry: the journal is damaged; samples after that point are lost");
                    self.health.damaged_segments += 1;
                }
            }
            for p in &f.frames {
                let Some((ts, samples)) = decode_wal_frame(p) else {
                    continue;
                };
                if let Some(m) = samples.iter().map(|s| s.0).max() {
                    self.next_id = self.next_id.max(m.saturating_add(1));
                }
                if ts < t0 || self.last_ts.is_some_and(|l| ts <= l) {
                    continue;
                }
                self.ingest(ts, &samples);
            }
        } else {
            tracing::warn!(file = %self.wal_path.display(), "telemetry: the journal has a bad header and is started again");
            self.health.damaged_segments += 1;
        }
        self.replaying = false;
        // The journal is rewritten with exactly what the open tier-0 page holds.
        let mut out = WAL_MAGIC.to_vec();
        out.extend_from_slice(&self.pending);
        write_atomically(&self.wal_path, &out)?;
        self.pending.clear();
        self.wal_size = out.len() as u64;
        // The journal was replaced: count its new size instead of the old one.
        self.used = (self.used + self.wal_size).saturating_sub(on_disk);
        self.last_wal = self.last_ts.unwrap_or(0);
        self.retain();
        Ok(())
    }

    fn damaged_chunk(&mut self, path: &Path, why: &str) {
        if self.health.damaged_chunks == 0 {
            tracing::warn!(file = %path.display(), "telemetry: a stored page is damaged ({why}); its slots read as empty");
        }
        self.health.damaged_chunks += 1;
    }

    /// Records one sample of each series at `ts` (Unix seconds; one call per tier-0 step).
    /// A `ts` not after the last one (the clock went back) is refused and counted.
    pub fn record(&mut self, ts: u64, samples: &[(u32, i64)]) {
        if let Some(last) = self.last_ts {
            if ts <= last {
                if self.health.clock_skips == 0 {
                    tracing::warn!("telemetry: the clock went back; samples are skipped until it passes the last one recorded");
                }
                self.health.clock_skips += 1;
                return;
            }
        }
        self.ingest(ts, samples);
        if ts.saturating_sub(self.last_wal) >= self.opts.flush_interval {
            self.flush_journal();
        }
    }

    fn ingest(&mut self, ts: u64, samples: &[(u32, i64)]) {
        self.last_ts = Some(ts);
        for k in 0..self.tiers.len() {
            for &(id, v) in samples {
                self.absorb(k, ts, id, &Agg::one(v));
            }
        }
        let mut p = Vec::with_capacity(8 + samples.len() * 4);
        p.extend_from_slice(&ts.to_le_bytes());
        for &(id, v) in samples {
            put_varint(&mut p, u64::from(id));
            put_varint(&mut p, zigzag(v));
        }
        frame::put(&mut self.pending, &p);
    }

    /// Folds an aggregate into tier k's slot for `ts`, writing the open page first when `ts`
    /// is past it.
    fn absorb(&mut self, k: usize, ts: u64, id: u32, a: &Agg) {
        let t = &self.tiers[k];
        let slot = ts / t.step;
        if slot < t.covered {
            return;
        }
        let page = slot - slot % t.page_slots;
        if page != t.open.start {
            if page < t.open.start {
                return;
            }
            if !self.tiers[k].open.pages.is_empty() {
                self.flush_page(k);
            }
            self.tiers[k].open.start = page;
        }
        let t = &mut self.tiers[k];
        let n = t.page_slots as usize;
        let aggs = t
            .open
            .pages
            .entry(id)
            .or_insert_with(|| vec![Agg::default(); n]);
        aggs[(slot - page) as usize].merge(a);
    }

    /// Writes tier k's open page as a block (clearing it either way: a page that cannot be
    /// written is lost to history, never retried into an unbounded backlog).
    fn flush_page(&mut self, k: usize) {
        let pages = std::mem::take(&mut self.tiers[k].open.pages);
        let start = self.tiers[k].open.start;
        let n = self.tiers[k].page_slots as u32;
        self.tiers[k].covered = self.tiers[k].covered.max(start + u64::from(n));
        let list: Vec<(u32, &[Agg])> = pages.iter().map(|(id, a)| (*id, &a[..])).collect();
        match self.append_block(k, start, n, &list) {
            Ok(()) => {
                if k == 0 {
                    // Everything the journal held is in the block now.
                    self.pending.clear();
                    if !self.replaying {
                        self.reset_journal();
                    }
                }
                self.retain();
                self.resume(Written::Block);
            }
            Err(why) => {
                self.health.write_errors += 1;
                if k == 0 {
                    self.pending.clear();
                }
                self.trouble(Written::Block, why);
            }
        }
    }

    fn append_block(
        &mut self,
        k: usize,
        start: u64,
        n: u32,
        pages: &[(u32, &[Agg])],
    ) -> Result<(), String> {
        let step = self.tiers[k].step;
        let start_secs = start * step;
        let span = self.tiers[k].page_secs() * PAGES_PER_SEGMENT[k];
        let chunks = segment::encode_chunks(pages);
        // The budget is checked with the header of a new file included.
        self.ensure((segment::block_len(&chunks) + segment::HEADER) as u64)?;
        let t = &mut self.tiers[k];
        let reuse = t
            .segments
            .last()
            .is_some_and(|s| !s.sealed && start_secs < s.start + span && start_secs >= s.end);
        if !reuse {
            if let Some(s) = t.segments.last_mut() {
                s.sealed = true;
            }
            let path = t.dir.join(format!("{start_secs:012}.seg"));
            let header = segment::header(k as u8, step as u32);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            if let Err(e) = f.write_all(&header).and_then(|()| f.sync_data()) {
                drop(f);
                let _ = fs::remove_file(&path);
                return Err(format!("cannot write {}: {e}", path.display()));
            }
            sync_dir(&t.dir);
            self.used += header.len() as u64;
            t.segments.push(Segment {
                path,
                start: start_secs,
                end: start_secs,
                bytes: header.len() as u64,
                sealed: false,
                blocks: Vec::new(),
            });
        }
        let seg = self.tiers[k]
            .segments
            .last_mut()
            .expect("a segment was just ensured");
        let (bytes, block) = segment::encode_block(start, n, &chunks, seg.bytes);
        let mut f = OpenOptions::new()
            .append(true)
            .open(&seg.path)
            .map_err(|e| format!("cannot open {}: {e}", seg.path.display()))?;
        let half = bytes.len() / 2;
        let res = f.write_all(&bytes[..half]).and_then(|()| {
            if let Some(fault) = &self.fault {
                fault(
                    [
                        "telemetry:block:tier0",
                        "telemetry:block:tier1",
                        "telemetry:block:tier2",
                    ][k.min(2)],
                );
            }
            f.write_all(&bytes[half..])?;
            f.sync_data()
        });
        if let Err(e) = res {
            // Never leave a torn block to be appended after: cut it off, or seal the file.
            if f.set_len(seg.bytes).is_err() {
                seg.sealed = true;
            }
            return Err(format!("cannot write {}: {e}", seg.path.display()));
        }
        seg.bytes += bytes.len() as u64;
        seg.end = (start + u64::from(n)) * step;
        seg.blocks.push(block);
        self.used += bytes.len() as u64;
        Ok(())
    }

    fn reset_journal(&mut self) {
        let path = self.wal_path.clone();
        let res = OpenOptions::new().write(true).open(&path).and_then(|f| {
            f.set_len(WAL_MAGIC.len() as u64)?;
            f.sync_data()
        });
        match res {
            Ok(()) => {
                self.used = self
                    .used
                    .saturating_sub(self.wal_size - WAL_MAGIC.len() as u64);
                self.wal_size = WAL_MAGIC.len() as u64;
            }
            Err(e) => {
                self.health.write_errors += 1;
                self.trouble(
                    Written::Journal,
                    format!("cannot truncate {}: {e}", path.display()),
                );
            }
        }
    }

    /// Writes the samples not yet in the journal (called every `flush_interval` by
    /// [`Store::record`], and by the daemon at shutdown).
    pub fn flush_journal(&mut self) {
        let Some(ts) = self.last_ts else { return };
        self.last_wal = ts;
        if self.pending.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.pending);
        let path = self.wal_path.clone();
        let res = self.ensure(bytes.len() as u64).and_then(|()| {
            append(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
        match res {
            Ok(()) => {
                self.wal_size += bytes.len() as u64;
                self.used += bytes.len() as u64;
                self.resume(Written::Journal);
            }
            Err(why) => {
                // A partial append is cut off so that the journal stays readable.
                if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                    let _ = f.set_len(self.wal_size);
                }
                self.health.write_errors += 1;
                self.trouble(Written::Journal, why);
            }
        }
    }

    /// Makes room for `n` more bytes, deleting the oldest segments; an error when even an
    /// empty store of segments would not leave room.
    fn ensure(&mut self, n: u64) -> Result<(), String> {
        while self.used + n > self.opts.max_bytes {
            let oldest = self
                .tiers
                .iter()
                .enumerate()
                .filter_map(|(k, t)| t.segments.first().map(|s| (s.start, k)))
                .min();
            let Some((_, k)) = oldest else {
                return Err(format!(
                    "the byte budget ([telemetry] max_bytes = {}) is spent with no segment left to delete",
                    self.opts.max_bytes
                ));
            };
            let seg = self.tiers[k].segments.remove(0);
            self.delete(seg);
            self.health.budget_deletions += 1;
        }
        Ok(())
    }

    fn delete(&mut self, seg: Segment) {
        match fs::remove_file(&seg.path) {
            Ok(()) => self.used = self.used.saturating_sub(seg.bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.used = self.used.saturating_sub(seg.bytes)
            }
            Err(e) => {
                // Still on disk: still counted; the next start's scan finds it again.
                tracing::warn!(file = %seg.path.display(), error = %e, "telemetry: a segment could not be deleted");
            }
        }
    }

    /// Deletes the segments past their tier's retention.
    fn retain(&mut self) {
        let Some(now) = self.last_ts else { return };
        for k in 0..self.tiers.len() {
            let keep = self.tiers[k].keep;
            while self.tiers[k]
                .segments
                .first()
                .is_some_and(|s| s.sealed && s.end + keep <= now)
            {
                let seg = self.tiers[k].segments.remove(0);
                self.delete(seg);
            }
        }
    }

    /// A write failed: history pauses (one warning for the episode, however many writes fail
    /// in it).
    fn trouble(&mut self, w: Written, why: String) {
        if self.paused_by.is_none() {
            tracing::warn!("telemetry: history paused: {why}; serving is not affected");
            self.paused_by = Some(w);
        }
        self.health.paused = Some(why);
    }

    /// A write succeeded: the episode ends if it was this kind of write that failed (a block
    /// written also ends one the catalog began). A journal append that still fits the
    /// filesystem's last block does not end a pause that a block write began.
    fn resume(&mut self, w: Written) {
        let ends = match (self.paused_by, w) {
            (None, _) => false,
            (Some(Written::Catalog), Written::Block) => true,
            (Some(p), w) => p == w,
        };
        if ends {
            self.paused_by = None;
            self.health.paused = None;
            tracing::info!("telemetry: history is written again");
        }
    }

    /// The store's health and usage.
    pub fn health(&self) -> Health {
        let mut h = self.health.clone();
        h.bytes_used = self.used;
        h.tiers = self
            .tiers
            .iter()
            .map(|t| TierUsage {
                step: t.step,
                keep: t.keep,
                segments: t.segments.len(),
                bytes: t.segments.iter().map(|s| s.bytes).sum(),
                slots: t
                    .segments
                    .iter()
                    .flat_map(|s| &s.blocks)
                    .map(|b| b.chunks.len() as u64 * u64::from(b.n_slots))
                    .sum(),
                oldest: t.segments.first().map(|s| s.start),
            })
            .collect();
        h
    }

    /// The newest sample's time.
    pub fn last_time(&self) -> Option<u64> {
        self.last_ts
    }

    /// The series matching `sel` over `[from, to)` in at most `points` buckets each, from the
    /// finest tier whose retention reaches back to `from`.
    pub fn query(
        &mut self,
        sel: &Selector,
        from: u64,
        to: u64,
        points: u32,
    ) -> Result<Vec<QueryResult>, StoreError> {
        if points == 0 || points > MAX_POINTS {
            return Err(StoreError::BadQuery(format!(
                "points must be 1 to {MAX_POINTS}"
            )));
        }
        if to <= from {
            return Err(StoreError::BadQuery("to must be after from".into()));
        }
        let matched: Vec<(u32, SeriesDef)> = self
            .series()
            .into_iter()
            .filter(|(_, d)| sel.matches(d))
            .collect();
        if matched.len() > MAX_QUERY_SERIES {
            return Err(StoreError::BadQuery(format!(
                "the selector matches {} series; at most {MAX_QUERY_SERIES} may be queried at once (add labels)",
                matched.len()
            )));
        }
        let now = self.last_ts.unwrap_or(to).max(to);
        let k = (0..self.tiers.len())
            .find(|&k| now.saturating_sub(self.tiers[k].keep) <= from)
            .unwrap_or(self.tiers.len() - 1);
        let step = self.tiers[k].step;
        let range = to - from;
        let mut width = step * range.div_ceil(step * u64::from(points)).max(1);
        let base = |w: u64| from - from % w;
        while (to - base(width)).div_ceil(width) > u64::from(points) {
            width += step;
        }
        let b0 = base(width);
        let nb = (to - b0).div_ceil(width) as usize;
        let (lo_slot, hi_slot) = (from / step, to.div_ceil(step));
        let fold = |buckets: &mut [Agg], slot0: u64, aggs: &[Agg]| {
            for (i, a) in aggs.iter().enumerate() {
                let ts = (slot0 + i as u64) * step;
                if a.count > 0 && ts >= from && ts < to {
                    buckets[((ts - b0) / width) as usize].merge(a);
                }
            }
        };
        let mut buckets = vec![vec![Agg::default(); nb]; matched.len()];
        let mut damaged = Vec::new();
        for seg in &self.tiers[k].segments {
            let mut blocks = seg
                .blocks
                .iter()
                .filter(|b| b.start_slot < hi_slot && b.start_slot + u64::from(b.n_slots) > lo_slot)
                .peekable();
            if blocks.peek().is_none() {
                continue;
            }
            // One open per segment, not per chunk.
            let Ok(mut f) = File::open(&seg.path) else {
                continue;
            };
            for b in blocks {
                for ((id, _), buckets) in matched.iter().zip(buckets.iter_mut()) {
                    let Some(c) = b.chunk(*id) else { continue };
                    match read_aggs(&mut f, c, b.n_slots) {
                        Ok(aggs) => fold(buckets, b.start_slot, &aggs),
                        Err(Some(why)) => damaged.push((seg.path.clone(), why)),
                        Err(None) => {}
                    }
                }
            }
        }
        let open = &self.tiers[k].open;
        for ((id, _), buckets) in matched.iter().zip(buckets.iter_mut()) {
            if let Some(aggs) = open.pages.get(id) {
                fold(buckets, open.start, aggs);
            }
        }
        for (path, why) in damaged {
            self.damaged_chunk(&path, &why);
        }
        let out = matched
            .into_iter()
            .zip(buckets)
            .map(|((_, def), buckets)| QueryResult {
                series: def,
                tier: k,
                step: width,
                points: buckets
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.count > 0)
                    .map(|(i, a)| Point {
                        t: b0 + i as u64 * width,
                        min: a.min,
                        max: a.max,
                        sum: a.sum,
                        count: a.count,
                    })
                    .collect(),
            })
            .collect();
        Ok(out)
    }
}

fn catalog_entry(id: u32, d: &SeriesDef) -> Vec<u8> {
    #[derive(Serialize)]
    struct Entry<'a> {
        id: u32,
        #[serde(flatten)]
        def: &'a SeriesDef,
    }
    serde_json::to_vec(&Entry { id, def: d }).unwrap_or_default()
}

fn decode_wal_frame(p: &[u8]) -> Option<(u64, Vec<(u32, i64)>)> {
    let ts = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let mut pos = 8;
    let mut samples = Vec::new();
    while pos < p.len() {
        let id = u32::try_from(get_varint(p, &mut pos)?).ok()?;
        let v = unzigzag(get_varint(p, &mut pos)?);
        samples.push((id, v));
    }
    Some((ts, samples))
}

fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().append(true).create(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_data())
        .map_err(io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))?;
    if let Some(d) = path.parent() {
        sync_dir(d);
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io("create directory", dir)(e)),
    }
}
