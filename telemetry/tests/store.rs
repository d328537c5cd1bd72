//! The store end to end on real files: tiers and their exactness, tier selection, crash
//! recovery, damaged files, the byte budget.

use std::path::Path;

use airlock_telemetry::{Kind, Options, Selector, SeriesDef, Store};

const T0: u64 = 1_790_000_000 - 1_790_000_000 % 86_400; // a UTC midnight

fn opts(dir: &Path) -> Options {
    Options {
        dir: dir.to_path_buf(),
        tiers: [(1, 3600), (60, 7 * 86_400), (3600, 365 * 86_400)],
        page_slots: [300, 60, 24],
        max_bytes: 1 << 30,
        flush_interval: 5,
        max_series: 100,
    }
}

fn defs() -> [SeriesDef; 3] {
    [
        SeriesDef::new("queue_depth", Kind::Gauge, "1").label("model", "m"),
        SeriesDef::new("requests", Kind::Counter, "1").label("model", "m"),
        SeriesDef::new("temperature", Kind::Gauge, "celsius"),
    ]
}

/// Value of series `i` at time `t`.
fn value(i: usize, t: u64) -> i64 {
    match i {
        0 => ((t * 7919) % 13) as i64,
        1 => (t % 3) as i64 * 10,
        _ => 40 + ((t / 600) % 5) as i64,
    }
}

fn run(store: &mut Store, ids: &[u32], from: u64, to: u64) {
    for t in from..to {
        let s: Vec<(u32, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, value(i, t)))
            .collect();
        store.record(t, &s);
    }
}

fn ids(store: &mut Store) -> Vec<u32> {
    defs()
        .iter()
        .map(|d| store.series_id(d).expect("defined"))
        .collect()
}

fn one(
    store: &mut Store,
    sel: &str,
    from: u64,
    to: u64,
    points: u32,
) -> airlock_telemetry::QueryResult {
    let mut r = store
        .query(&Selector::parse(sel).expect("selector"), from, to, points)
        .expect("query");
    assert_eq!(r.len(), 1, "{sel}");
    r.remove(0)
}

#[test]
fn every_tier_keeps_min_max_sum_and_count_exactly_and_the_tier_is_chosen_by_range() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut store = Store::open(opts(dir.path())).expect("opens");
    let ids = ids(&mut store);
    let end = T0 + 2 * 86_400 + 1800;
    run(&mut store, &ids, T0, end);

    // The last hour at full resolution: tier 0, one point per 2 s at 2000 points.
    let r = one(&mut store, "queue_depth", end - 3600, end, 2000);
    assert_eq!((r.tier, r.step), (0, 2));
    assert_eq!(r.points.len(), 1800);
    for p in &r.points {
        let (a, b) = (value(0, p.t), value(0, p.t + 1));
        assert_eq!(
            (p.min, p.max, p.sum, p.count),
            (a.min(b), a.max(b), a + b, 2)
        );
    }

    // A day: tier 1 (its open hour included), buckets of whole minutes.
    let from = end - 86_400;
    let r = one(&mut store, "requests", from, end, 1440);
    assert_eq!((r.tier, r.step), (1, 60));
    let total: i64 = r.points.iter().map(|p| p.sum).sum();
    let want: i64 = (from..end).map(|t| value(1, t)).sum();
    assert_eq!(total, want, "a counter's increase is exact through tier 1");
    assert!(r
        .points
        .iter()
        .all(|p| p.count == 60 && p.max == 20 && p.min == 0));

    // Beyond tier 1's week: tier 2; the open day's hours are there too.
    let r = one(&mut store, "temperature", end - 30 * 86_400, end, 2000);
    assert_eq!(r.tier, 2);
    assert_eq!(
        r.points.iter().map(|p| u64::from(p.count)).sum::<u64>(),
        end - T0
    );
    let sum: i64 = r.points.iter().map(|p| p.sum).sum();
    assert_eq!(sum, (T0..end).map(|t| value(2, t)).sum::<i64>());
    assert_eq!(r.points.iter().map(|p| p.max).max(), Some(44));

    // Never more points than asked for, and refusals that name the limit.
    for n in [1, 7, 100, 2000] {
        let r = one(&mut store, "queue_depth", end - 3000, end, n);
        assert!(r.points.len() <= n as usize, "{n}: {}", r.points.len());
    }
    let sel = Selector::parse("queue_depth").expect("sel");
    assert!(store.query(&sel, end - 10, end, 2001).is_err());
    assert!(store.query(&sel, end, end - 10, 10).is_err());
}

#[test]
fn a_reopened_store_has_everything_up_to_its_last_journal_write_in_every_tier() {
    let dir = tempfile::tempdir().expect("tmp");
    let end = T0 + 7300 + 3;
    let before = {
        let mut store = Store::open(opts(dir.path())).expect("opens");
        let ids = ids(&mut store);
        run(&mut store, &ids, T0, end);
        let q = |s: &mut Store, tier_window: u64| {
            one(s, "requests", end - tier_window, end, 2000)
                .points
                .iter()
                .map(|p| (p.t, p.sum, p.count))
                .collect::<Vec<_>>()
        };
        let b = (
            q(&mut store, 3000),
            q(&mut store, 86_400),
            q(&mut store, 30 * 86_400),
        );
        // Dropped without a last journal write, as a kill would leave it: the samples of the
        // last seconds since the journal was written are lost, nothing else.
        drop(store);
        b
    };
    let mut store = Store::open(opts(dir.path())).expect("reopens");
    assert_eq!(store.health().bytes_used, dir_size(dir.path()));
    let last = store.last_time().expect("journal replayed");
    assert!(last >= end - 1 - 5 && last < end, "{last}");
    let lost = end - 1 - last;
    for (window, b) in [
        (3000, &before.0),
        (86_400, &before.1),
        (30 * 86_400, &before.2),
    ] {
        let after: Vec<(u64, i64, u32)> = one(&mut store, "requests", end - window, end, 2000)
            .points
            .iter()
            .map(|p| (p.t, p.sum, p.count))
            .collect();
        let n = |v: &[(u64, i64, u32)]| v.iter().map(|p| u64::from(p.2)).sum::<u64>();
        assert_eq!(n(b) - n(&after), lost, "window {window}");
        assert!(after.len() >= b.len() - 1);
    }
    // Recording goes on where it stopped; the clock going back is refused and counted.
    let ids = ids(&mut store);
    run(&mut store, &ids, end, end + 400);
    store.record(end, &[(ids[0], 1)]);
    assert_eq!(store.health().clock_skips, 1);
    let r = one(&mut store, "queue_depth", end, end + 400, 400);
    assert_eq!(r.points.len(), 400);
}

#[test]
fn a_torn_block_is_cut_off_and_a_damaged_chunk_reads_as_a_gap() {
    let dir = tempfile::tempdir().expect("tmp");
    // Pages at 0, 300 and 600 s: one segment of three blocks.
    let end = T0 + 901;
    {
        let mut store = Store::open(opts(dir.path())).expect("opens");
        let ids = ids(&mut store);
        run(&mut store, &ids, T0, end);
        store.flush_journal();
    }
    let seg = dir.path().join(format!("tier0/{T0:012}.seg"));
    let len = std::fs::metadata(&seg).expect("segment").len();
    // A write cut short: the last block (600..900 s) loses its tail.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open");
    f.set_len(len - 10).expect("truncate");
    drop(f);
    let mut store = Store::open(opts(dir.path())).expect("reopens after a torn block");
    assert_eq!(store.health().damaged_segments, 1);
    let r = one(&mut store, "temperature", T0, T0 + 900, 2000);
    // Blocks 0..600 s are intact; the torn one is gone.
    let counted: u64 = r.points.iter().map(|p| u64::from(p.count)).sum();
    assert_eq!(
        counted, 600,
        "the torn page is lost, the pages before it are not"
    );
    // New pages never follow the torn bytes: they go to a new segment.
    let ids = ids(&mut store);
    run(&mut store, &ids, end, end + 700);
    let segs = std::fs::read_dir(dir.path().join("tier0"))
        .expect("dir")
        .count();
    assert_eq!(segs, 2);
    drop(store);

    // Flip a byte inside a chunk of the first segment (its first block's first chunk).
    let mut bytes = std::fs::read(&seg).expect("read");
    let dir_len = u32::from_le_bytes(bytes[20..24].try_into().expect("4")) as usize;
    let first_chunk = 16 + 12 + dir_len;
    bytes[first_chunk] ^= 0x55;
    std::fs::write(&seg, &bytes).expect("write");
    let mut store = Store::open(opts(dir.path())).expect("reopens");
    let all: u64 = ["queue_depth", "requests", "temperature"]
        .iter()
        .map(|s| {
            one(&mut store, s, T0, T0 + 900, 900)
                .points
                .iter()
                .map(|p| u64::from(p.count))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(
        all,
        3 * 600 - 300,
        "exactly one series' page of 300 s reads as a gap"
    );
    assert!(store.health().damaged_chunks >= 1);
}

#[test]
fn a_damaged_journal_or_catalog_loses_only_what_is_after_the_damage() {
    let dir = tempfile::tempdir().expect("tmp");
    {
        let mut store = Store::open(opts(dir.path())).expect("opens");
        let ids = ids(&mut store);
        run(&mut store, &ids, T0, T0 + 100);
        store.flush_journal();
    }
    let wal = dir.path().join("wal");
    let mut b = std::fs::read(&wal).expect("wal");
    let n = b.len();
    b[n - 3] ^= 0xff;
    std::fs::write(&wal, &b).expect("write");
    let cat = dir.path().join("catalog");
    let mut c = std::fs::read(&cat).expect("catalog");
    let n = c.len();
    c[n - 5] ^= 0xff;
    std::fs::write(&cat, &c).expect("write");
    let mut store = Store::open(opts(dir.path())).expect("reopens");
    let h = store.health();
    assert_eq!(h.damaged_segments, 2, "{h:?}");
    assert_eq!(h.series, 2, "the last definition was damaged");
    assert_eq!(store.last_time(), Some(T0 + 98));
    assert!(dir.path().join("catalog.damaged").exists());
    // The damaged series' id is never given to another series.
    let again = store.series_id(&defs()[2]).expect("defined again");
    assert!(again >= 3);
}

#[test]
fn the_byte_budget_holds_under_sustained_writes_and_counts_every_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut o = opts(dir.path());
    o.max_bytes = 1 << 20;
    // Warped time: a journal write every 6 samples, not at every one.
    o.flush_interval = 120;
    let mut store = Store::open(o).expect("opens");
    let ids: Vec<u32> = (0..60)
        .map(|i| {
            store
                .series_id(&SeriesDef::new("noisy", Kind::Gauge, "us").label("i", &i.to_string()))
                .expect("defined")
        })
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut t = T0;
    for _ in 0..3 * 86_400 / 20 {
        // Three time-warped days: one sample every 20 s of noisy values.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s: Vec<(u32, i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, ((x >> (i % 32)) & 0xfffff) as i64))
            .collect();
        store.record(t, &s);
        t += 20;
        if t.is_multiple_of(1000) {
            let on_disk = dir_size(dir.path());
            assert!(on_disk <= 1 << 20, "{on_disk} bytes on disk");
        }
    }
    let h = store.health();
    assert!(h.budget_deletions > 0, "{h:?}");
    assert_eq!(h.bytes_used, dir_size(dir.path()));
    assert!(h.paused.is_none(), "{h:?}");
}

fn dir_size(d: &Path) -> u64 {
    std::fs::read_dir(d)
        .expect("dir")
        .flatten()
        .map(|e| {
            let m = e.metadata().expect("meta");
            if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            }
        })
        .sum()
}
