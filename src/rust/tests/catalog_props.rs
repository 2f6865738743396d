//! Property tests of the catalog (v2 tree) through the heap: random put /
//! remove / rename sequences, batches committed or rolled back, both sync
//! modes, reopens (read-only and writable) and simulated crashes at each
//! fail point, against a `BTreeMap` model of the committed names.

mod heap_util;

use std::collections::BTreeMap;
use std::path::Path;

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::{FailPoint, Heap, SyncMode};
use rfmalloc::prng::Rng;

/// name -> (data fill byte, data length, meta bytes)
type Model = BTreeMap<String, (u8, u64, Vec<u8>)>;

fn name_of(rng: &mut Rng) -> String {
    // Names of very different lengths, so pages split and merge.
    let k = rng.below(300);
    let pad = "p".repeat((k % 5) as usize * 50);
    format!("n{k:04}{pad}")
}

fn meta_of(k: u8, len: usize) -> Vec<u8> {
    vec![k; len]
}

/// The heap's catalog equals the model, object by object.
fn verify(h: &Heap, m: &Model) {
    h.check_invariants().unwrap();
    let list = h.list();
    let names: Vec<&str> = list.iter().map(|e| e.name.as_str()).collect();
    let want: Vec<&str> = m.keys().map(String::as_str).collect();
    assert_eq!(names, want);
    assert_eq!(h.info().objects, m.len() as u64);
    for (name, (fill, len, meta)) in m {
        let e = h.get(name).unwrap();
        assert_eq!(&e.meta, meta, "meta of {name}");
        let got = get_bytes(h, name);
        assert_eq!(got.len() as u64, *len);
        assert!(got.iter().all(|b| b == fill), "data of {name}");
        assert!(h.contains(name).unwrap());
    }
    assert!(!h.contains("zz-not-there").unwrap());
    let sums = h.summaries().unwrap();
    assert!(sums.unlisted.is_none());
    let sums = sums.rows;
    assert_eq!(sums.len(), m.len());
}

/// One random change; applies it to `m` when it succeeds.
fn step(h: &Heap, rng: &mut Rng, m: &mut Model) {
    match rng.below(10) {
        0..=4 => {
            let name = name_of(rng);
            let fill = rng.below(250) as u8 + 1;
            let len = 8 + rng.below(200);
            let meta = meta_of(fill, rng.below(40) as usize);
            let off = h.malloc(len).unwrap();
            write(h, off, &vec![fill; len as usize]);
            let overwrite = rng.below(2) == 0;
            match h.put(&name, &meta, &[raw(off, len)], overwrite) {
                Ok(()) => {
                    m.insert(name, (fill, len, meta));
                }
                Err(Error::Exists { .. }) => assert!(!overwrite && m.contains_key(&name)),
                Err(e) => panic!("{e}"),
            }
            h.release(off).unwrap();
        }
        5..=7 => {
            let name = name_of(rng);
            match h.remove(&name) {
                Ok(()) => assert!(m.remove(&name).is_some()),
                Err(Error::NotFound { .. }) => assert!(!m.contains_key(&name)),
                Err(e) => panic!("{e}"),
            }
        }
        _ => {
            let (from, to) = (name_of(rng), name_of(rng));
            let overwrite = rng.below(2) == 0;
            match h.rename(&from, &to, overwrite) {
                Ok(()) => {
                    let v = m.remove(&from).unwrap();
                    m.insert(to, v);
                }
                Err(Error::NotFound { .. }) => assert!(!m.contains_key(&from)),
                Err(Error::Exists { .. }) => assert!(!overwrite && m.contains_key(&to)),
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn reopen(p: &Path, h: Heap) -> Heap {
    drop(h);
    // A read-only open reads lazily; it must see the same catalog.
    open(p, 1 << 20)
}

#[test]
fn random_changes_batches_and_reopens_match_a_model() {
    for seed in 1..=3u64 {
        let d = TempDir::new("catprops");
        let p = d.file("h.bin");
        let mut rng = Rng::from_seed(seed);
        let mut h = open(&p, 1 << 20);
        let mut m = Model::new();
        for round in 0..40 {
            if seed == 2 {
                h.set_sync(if round % 2 == 0 {
                    SyncMode::None
                } else {
                    SyncMode::Commit
                })
                .unwrap();
            }
            match rng.below(4) {
                0 => {
                    // A batch, committed.
                    h.begin_batch().unwrap();
                    for _ in 0..rng.below(30) {
                        step(&h, &mut rng, &mut m);
                    }
                    h.check_invariants().unwrap();
                    h.commit_batch().unwrap();
                }
                1 => {
                    // A batch, rolled back: nothing changes.
                    let before = m.clone();
                    h.begin_batch().unwrap();
                    for _ in 0..rng.below(30) {
                        step(&h, &mut rng, &mut m);
                    }
                    h.abort_batch();
                    m = before;
                }
                _ => {
                    for _ in 0..rng.below(10) {
                        step(&h, &mut rng, &mut m);
                    }
                }
            }
            verify(&h, &m);
            if round % 10 == 9 {
                h = reopen(&p, h);
                verify(&h, &m);
                if round % 20 == 19 {
                    drop(h);
                    let (r, _) = Heap::open(&p, &ro()).unwrap();
                    for name in m.keys().take(20) {
                        assert!(r.get(name).is_ok());
                    }
                    verify(&r, &m);
                    drop(r);
                    h = open(&p, 1 << 20);
                }
            }
        }
        assert!(m.len() > 20, "seed {seed}: only {} names", m.len());
    }
}

#[test]
fn a_crash_at_any_fail_point_leaves_the_old_or_the_new_catalog() {
    let mut rng = Rng::from_seed(77);
    for case in 0..24 {
        let d = TempDir::new("catcrash");
        let p = d.file("h.bin");
        let h = open(&p, 1 << 20);
        if case % 3 == 2 {
            h.set_sync(SyncMode::None).unwrap();
        }
        let mut m = Model::new();
        for _ in 0..40 + rng.below(80) {
            step(&h, &mut rng, &mut m);
        }
        let before = m.clone();
        let point = if case % 2 == 0 {
            FailPoint::BeforeSlot
        } else {
            FailPoint::AfterSlot
        };
        h.debug_fail_next_commit(point);
        // A batch of changes, or a single change, crashes at its commit.
        let mut after = m.clone();
        let crashed = if case % 4 < 2 {
            h.begin_batch().unwrap();
            for _ in 0..1 + rng.below(20) {
                step(&h, &mut rng, &mut after);
            }
            h.commit_batch().is_err()
        } else {
            let mut r = false;
            for _ in 0..20 {
                let snapshot = after.clone();
                let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    step(&h, &mut rng, &mut after)
                }));
                if got.is_err() {
                    // The crashed change: the model was not updated.
                    after = snapshot;
                    r = true;
                    break;
                }
            }
            r
        };
        if !crashed {
            continue;
        }
        drop(h);
        let h = open(&p, 1 << 20);
        let names: Vec<String> = h.list().into_iter().map(|e| e.name).collect();
        let old: Vec<String> = before.keys().cloned().collect();
        if point == FailPoint::BeforeSlot {
            assert_eq!(
                names, old,
                "case {case}: a crash before the slot kept changes"
            );
            verify(&h, &before);
        } else {
            // After the slot: the new catalog (for a batch, all of it).
            assert_ne!(names.len(), usize::MAX);
            h.check_invariants().unwrap();
            if case % 4 < 2 {
                verify(&h, &after);
            }
        }
    }
}

#[test]
fn unsynced_commits_survive_reopen_and_sync_makes_them_durable() {
    let d = TempDir::new("catsync");
    let p = d.file("h.bin");
    let h = open(&p, 1 << 20);
    h.set_sync(SyncMode::None).unwrap();
    let mut m = Model::new();
    let mut rng = Rng::from_seed(5);
    for _ in 0..200 {
        step(&h, &mut rng, &mut m);
    }
    verify(&h, &m);
    h.sync().unwrap();
    for _ in 0..50 {
        step(&h, &mut rng, &mut m);
    }
    // Closing syncs: the read-only open reads lazily and sees it all.
    drop(h);
    let (r, _) = Heap::open(&p, &ro()).unwrap();
    verify(&r, &m);
}

#[test]
fn a_v1_heap_is_read_and_converted_at_the_first_commit() {
    let d = TempDir::new("catv1");
    let p = d.file("h.bin");
    rfmalloc::heap::debug_write_v1_heap(&p, &[("old", b"meta1".as_slice(), 100), ("z", b"", 10)])
        .unwrap();
    let before = std::fs::read(&p).unwrap();
    assert_eq!(&before[8..12], &1u32.to_le_bytes());
    // Read-only: read as it is, never converted.
    {
        let (r, _) = Heap::open(&p, &ro()).unwrap();
        assert_eq!(r.get("old").unwrap().meta, b"meta1");
        assert_eq!(get_bytes(&r, "old").len(), 100);
        r.check_invariants().unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), before, "a read-only open wrote");
    // Writable: opened as v1, converted by the first commit.
    let h = open(&p, 1 << 20);
    h.check_invariants().unwrap();
    assert_eq!(std::fs::read(&p).unwrap()[8..12], 1u32.to_le_bytes());
    put_bytes(&h, "new", 50, 7);
    h.check_invariants().unwrap();
    drop(h);
    let after = std::fs::read(&p).unwrap();
    assert_eq!(&after[8..12], &2u32.to_le_bytes());
    let (r, _) = Heap::open(&p, &ro()).unwrap();
    let names: Vec<String> = r.list().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["new", "old", "z"]);
    assert_eq!(r.get("old").unwrap().meta, b"meta1");
    assert_eq!(get_bytes(&r, "old").len(), 100);
    r.check_invariants().unwrap();
}

/// What a power loss between two syncs may leave on disk: any block written
/// since the sync, with the header as it was at the sync. The last synced
/// state must read back whole: unsynced commits never overwrite a block the
/// durable slot references (the pages they wrote themselves, once
/// superseded, they free and reuse at once).
#[test]
fn a_power_loss_after_unsynced_commits_keeps_the_synced_state() {
    let d = TempDir::new("catpower");
    let p = d.file("h.bin");
    let h = open(&p, 1 << 20);
    h.set_sync(SyncMode::None).unwrap();
    let mut m = Model::new();
    let mut rng = Rng::from_seed(11);
    for round in 0..4 {
        for _ in 0..150 {
            step(&h, &mut rng, &mut m);
        }
        h.sync().unwrap();
        let synced = m.clone();
        let at_sync = std::fs::read(&p).unwrap();
        for _ in 0..300 {
            step(&h, &mut rng, &mut m);
        }
        let mut lost = std::fs::read(&p).unwrap();
        lost[..4096].copy_from_slice(&at_sync[..4096]);
        let q = d.file(&format!("lost{round}.bin"));
        std::fs::write(&q, &lost).unwrap();
        let (r, _) = Heap::open(&q, &ro()).unwrap();
        verify(&r, &synced);
    }
}

/// The same power loss, with the synced objects' data blocks still held by
/// session vectors when unsynced commits overwrite or remove them: dropping
/// the vectors afterwards must not free blocks the durable slot names
/// (they were freed at once, and the next save wrote into them).
#[test]
fn a_power_loss_keeps_synced_data_that_session_vectors_held() {
    let d = TempDir::new("catpowerheld");
    let p = d.file("h.bin");
    let h = open(&p, 1 << 20);
    h.set_sync(SyncMode::None).unwrap();
    let mut held = Vec::new();
    for i in 0..40u8 {
        let off = h.malloc(4000).unwrap();
        write(&h, off, &[i; 4000]);
        h.put(&format!("x{i}"), &[i], &[raw(off, 4000)], true)
            .unwrap();
        held.push(off); // the session vector keeps its reference
    }
    h.sync().unwrap();
    let at_sync = std::fs::read(&p).unwrap();
    for i in 0..40u8 {
        if i % 2 == 0 {
            put_bytes(&h, &format!("x{i}"), 4000, 200);
        } else {
            h.remove(&format!("x{i}")).unwrap();
        }
    }
    for off in held {
        h.release(off).unwrap();
    }
    for i in 0..40u8 {
        put_bytes(&h, &format!("y{i}"), 4000, 255);
    }
    let mut lost = std::fs::read(&p).unwrap();
    lost[..4096].copy_from_slice(&at_sync[..4096]);
    let q = d.file("lost.bin");
    std::fs::write(&q, &lost).unwrap();
    let (r, _) = Heap::open(&q, &ro()).unwrap();
    for i in 0..40u8 {
        assert_eq!(get_bytes(&r, &format!("x{i}")), vec![i; 4000], "x{i}");
    }
    r.check_invariants().unwrap();
}
