//! Untrusted files: anything that is not a valid heap is refused with
//! `Error::Corrupt` and left byte-for-byte unchanged (invariant 4).

mod heap_util;

use std::path::Path;

use heap_util::*;
use rfmalloc::catalog::tree;
use rfmalloc::error::Error;
use rfmalloc::format::{
    fnv1a64, pick_slot, slot_offset, Slot, FILE_GRANULE, HEADER_SIZE, SLOT_SIZE,
};
use rfmalloc::heap::{Heap, OpenOptions, SyncMode};
use rfmalloc::prng::Rng;

thread_local! {
    /// Whether the last accepted `probe` opened an older commit.
    static RECOVERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn last_recovered() -> bool {
    RECOVERED.with(|r| r.get())
}

/// Opens `path` read-only and writable. Returns whether it was accepted;
/// a rejection must be `Corrupt` and leave the file unchanged; an accepted
/// file must pass `check_invariants`. A read-only open never changes a
/// byte, even when it falls back to an older commit ([`last_recovered`]).
fn probe(path: &Path) -> bool {
    let before = std::fs::read(path).unwrap();
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    let mut accepted = 0;
    RECOVERED.with(|r| r.set(false));
    for readonly in [true, false] {
        let o = OpenOptions {
            readonly,
            initial_size: None,
            ..Default::default()
        };
        match Heap::open(path, &o) {
            Ok((h, created)) => {
                assert!(!created);
                if readonly {
                    RECOVERED.with(|r| r.set(h.recovery().is_some()));
                } else {
                    assert_eq!(h.recovery().is_some(), last_recovered(), "modes disagree");
                }
                // A read-only open reads the catalog lazily: damage below
                // the root shows when it is read.
                if readonly {
                    if let Err(e) = h.check_invariants() {
                        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
                        drop(h);
                        assert_eq!(std::fs::read(path).unwrap(), before);
                        continue;
                    }
                }
                h.check_invariants().unwrap();
                for e in h.list() {
                    match &e.damaged {
                        None => drop(h.get(&e.name).unwrap()),
                        Some(_) => assert!(matches!(h.get(&e.name), Err(Error::Corrupt { .. }))),
                    }
                }
                accepted += 1;
            }
            Err(e) => {
                assert!(
                    matches!(e, Error::Corrupt { .. } | Error::Damaged { .. }),
                    "{e}"
                );
                assert!(!readonly || accepted == 0);
                assert!(e.to_string().contains("nothing was changed"));
                assert_eq!(
                    std::fs::read(path).unwrap(),
                    before,
                    "rejected file was modified"
                );
                let now = std::fs::metadata(path).unwrap().modified().unwrap();
                assert_eq!(now, mtime, "rejected file was touched");
                if let Error::Damaged { .. } = e {
                    // The newest commit is durable and damaged: the
                    // read-only open fell back to the previous one; a
                    // writable open does only when asked (`recover`).
                    assert!(!readonly && last_recovered(), "{e}");
                    let o = OpenOptions {
                        recover: true,
                        ..Default::default()
                    };
                    let (h, _) = Heap::open(path, &o).unwrap();
                    assert!(h.recovery().is_some());
                    h.check_invariants().unwrap();
                    accepted += 1;
                }
            }
        }
    }
    // Both modes agree (a writable open of a heap whose newest commit is
    // damaged needing `recover` aside).
    assert!(accepted == 0 || accepted == 2, "modes disagree");
    accepted == 2
}

/// A small heap with a few named objects (one with no meta, one with no
/// blocks) and some history, so that both slots are valid.
fn sample(path: &Path) {
    let h = open(path, 256 << 10);
    put_bytes(&h, "alpha", 1000, 1);
    put_bytes(&h, "beta", 3000, 2);
    let off = h.malloc(64).unwrap();
    h.put("gamma", b"", &[raw(off, 64)], false).unwrap();
    h.put("delta", b"just meta", &[], false).unwrap();
    put_bytes(&h, "tmp", 10, 3);
    h.remove("tmp").unwrap();
    h.rename("beta", "beta2", false).unwrap();
}

fn with_copy(d: &TempDir, orig: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> bool {
    let p = d.file("m.bin");
    let mut b = orig.to_vec();
    f(&mut b);
    std::fs::write(&p, &b).unwrap();
    probe(&p)
}

#[test]
fn foreign_files_are_refused_unchanged() {
    let d = TempDir::new("foreign");
    let cases: Vec<Vec<u8>> = vec![
        b"hello, world\n".to_vec(),
        vec![0; 4096],
        vec![0; FILE_GRANULE as usize],
        vec![0xff; 2 * FILE_GRANULE as usize],
        b"RFMHEAP\0".to_vec(),
        {
            let mut v = vec![0u8; FILE_GRANULE as usize];
            v[..8].copy_from_slice(b"RFMHEAP\0");
            v
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let p = d.file(&format!("f{i}.bin"));
        std::fs::write(&p, c).unwrap();
        assert!(!probe(&p), "case {i} accepted");
    }
    let p = d.file("f0.bin");
    let err = Heap::open(&p, &opts(1 << 20)).err().unwrap();
    assert_eq!(err.class(), "fmalloc_corrupt");
    assert!(err.to_string().contains("f0.bin"), "{err}");
    // A directory is not a heap either.
    assert!(Heap::open(&d.0, &opts(1 << 20)).is_err());
}

#[test]
fn every_header_byte_flip_is_refused() {
    let d = TempDir::new("hdr");
    let p = d.file("h.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    // Fixed header fields (magic .. checksum).
    for at in 0..56 {
        assert!(
            !with_copy(&d, &orig, |b| b[at] ^= 0x20),
            "flip at {at} accepted"
        );
    }
    // Version 3, correctly signed: still refused, with the reason.
    let mut b = orig.clone();
    b[8] = 3;
    let sum = fnv1a64(&b[..48]);
    b[48..56].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let err = Heap::open(&p, &opts(0)).err().unwrap();
    assert!(err.to_string().contains("version 3"), "{err}");
    assert!(!probe(&p));
}

#[test]
fn slot_damage_falls_back_or_is_refused() {
    let d = TempDir::new("slot");
    let p = d.file("s.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    let (active, _) = pick_slot(&orig[..HEADER_SIZE as usize], orig.len() as u64).unwrap();
    let (a, b) = (slot_offset(active), slot_offset(1 - active));
    // Damage to the inactive slot changes nothing visible.
    for at in b..b + SLOT_SIZE {
        assert!(
            with_copy(&d, &orig, |x| x[at] ^= 1),
            "inactive flip at {at}"
        );
    }
    // Damage to the active slot: the previous generation or a refusal, never
    // a panic or a modified rejected file (checked in `probe`).
    for at in a..a + SLOT_SIZE {
        with_copy(&d, &orig, |x| x[at] ^= 1);
    }
    // Both slots damaged: refused.
    assert!(!with_copy(&d, &orig, |x| {
        x[a + 3] ^= 1;
        x[b + 3] ^= 1;
    }));
}

#[test]
fn catalog_and_meta_damage_recovers_or_is_refused() {
    let d = TempDir::new("cat");
    let p = d.file("c.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    let (_, slot) = pick_slot(&orig[..HEADER_SIZE as usize], orig.len() as u64).unwrap();
    let (off, len) = (slot.catalog_off as usize, tree::PAGE_SIZE);
    // Damage to the catalog in force: the previous commit, reported as a
    // recovery, or a refusal; never a silent success.
    let mut recovered = 0;
    for at in off..off + len {
        if with_copy(&d, &orig, |b| b[at] ^= 0x08) {
            assert!(last_recovered(), "catalog flip at {at} opened silently");
            recovered += 1;
        }
    }
    assert!(recovered > 0);
    // Meta blocks: find "alpha"'s meta via the API, then damage it.
    let meta_off = {
        let (h, _) = Heap::open(&p, &ro()).unwrap();
        assert_eq!(h.get("alpha").unwrap().meta, [1, 1, 2, 3]);
        drop(h);
        // The first entry is "alpha" (the catalog is one leaf page).
        tree::debug_leaf_entries(&orig[off..off + len]).unwrap()[0].meta_off as usize
    };
    // A damaged meta damages only its object: the heap opens, the object is
    // listed as damaged and cannot be got, the others read as before.
    let p2 = d.file("meta.bin");
    let mut b = orig.clone();
    b[meta_off] ^= 0x80;
    std::fs::write(&p2, &b).unwrap();
    assert!(probe(&p2));
    let (h, _) = Heap::open(&p2, &ro()).unwrap();
    let alpha = h.list().into_iter().find(|e| e.name == "alpha").unwrap();
    assert!(alpha
        .damaged
        .as_deref()
        .is_some_and(|w| w.contains("checksum")));
    assert!(matches!(h.get("alpha"), Err(Error::Corrupt { .. })));
    assert_eq!(h.get("delta").unwrap().meta, b"just meta");
    drop(h);
    // It can still be removed (or overwritten) by a writer.
    let h = open(&p2, 256 << 10);
    h.remove("alpha").unwrap();
    drop(h);
    let (h, _) = Heap::open(&p2, &ro()).unwrap();
    assert!(h
        .list()
        .iter()
        .all(|e| e.damaged.is_none() && e.name != "alpha"));
}

/// Rewrites the catalog's (one) page with `edit` applied and the slot's
/// checksum fixed, so that only the structural and geometric validation
/// can catch it.
fn resigned(orig: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = orig.to_vec();
    let (i, mut slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    let off = slot.catalog_off as usize;
    let mut page = b[off..off + tree::PAGE_SIZE].to_vec();
    edit(&mut page);
    b[off..off + tree::PAGE_SIZE].copy_from_slice(&page);
    slot.catalog_sum = tree::page_sum(&page);
    let at = slot_offset(i);
    b[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    b
}

#[test]
fn hostile_catalog_entries_are_refused() {
    let d = TempDir::new("hostile");
    let p = d.file("x.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    let file_len = orig.len() as u64;
    let set = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    // One leaf page: records from 32; the first is "alpha": 88 fixed
    // bytes, the name (5), no summary, then its block.
    let rec = 32;
    let blk = rec + 88 + 5;
    type Edit<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let edits: Vec<(&str, Edit<'_>)> = vec![
        ("resigned unchanged", Box::new(|_| {})),
        ("block beyond end", Box::new(move |b| set(b, blk, file_len))),
        ("block in header", Box::new(move |b| set(b, blk, 64))),
        (
            "misaligned block",
            Box::new(move |b| {
                let v = u64::from_le_bytes(b[blk..blk + 8].try_into().unwrap());
                set(b, blk, v + 8)
            }),
        ),
        (
            "huge capacity",
            Box::new(move |b| set(b, blk + 8, u64::MAX)),
        ),
        (
            "data past block",
            Box::new(move |b| set(b, blk + 24, 1 << 40)),
        ),
        ("meta beyond end", Box::new(|b| set(b, rec + 24, 1 << 50))),
        ("meta len > cap", Box::new(|b| set(b, rec + 40, 1 << 20))),
        ("entry count", Box::new(|b| b[10] = 200)),
        ("block count", Box::new(|b| b[rec + 4] = 200)),
        ("elem type", Box::new(move |b| b[blk + 32] = 99)),
        ("name not utf8", Box::new(|b| b[rec + 88] = 0xff)),
        ("name with NUL", Box::new(|b| b[rec + 88] = 0)),
        (
            "overlap with next entry",
            Box::new(move |b| {
                // alpha's block := beta2's first block offset.
                let beta_blk = blk + 40 + 88 + 5;
                let v = u64::from_le_bytes(b[beta_blk..beta_blk + 8].try_into().unwrap());
                set(b, blk, v)
            }),
        ),
    ];
    for (what, edit) in edits {
        let b = resigned(&orig, |x| edit(x));
        std::fs::write(&p, &b).unwrap();
        let ok = probe(&p);
        assert_eq!(ok, what == "resigned unchanged", "{what}");
    }
}

#[test]
fn truncated_files_are_refused() {
    let d = TempDir::new("trunc");
    let p = d.file("t.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    for len in [
        0usize,
        1,
        100,
        4095,
        4096,
        8192,
        65536,
        orig.len() - 1,
        orig.len() - 65536,
    ] {
        let q = d.file(&format!("t{len}.bin"));
        std::fs::write(&q, &orig[..len]).unwrap();
        if len == 0 {
            continue; // an empty file is a new heap
        }
        assert!(!probe(&q), "truncation to {len} accepted");
    }
}

#[test]
fn random_mutations_never_panic_or_modify_rejected_files() {
    let d = TempDir::new("fuzz");
    let p = d.file("r.bin");
    sample(&p);
    let orig = std::fs::read(&p).unwrap();
    let (_, slot) = pick_slot(&orig[..HEADER_SIZE as usize], orig.len() as u64).unwrap();
    let hot = slot.catalog_off as usize..(slot.catalog_off + slot.catalog_cap) as usize;
    let mut rng = Rng::new(0x5eed);
    let (mut accepted, mut recovered, mut refused) = (0, 0, 0);
    for _ in 0..300 {
        let ok = with_copy(&d, &orig, |b| {
            for _ in 0..1 + rng.below(4) {
                // Mostly the metadata: header page and catalog block.
                let at = match rng.below(3) {
                    0 => rng.below(256) as usize,
                    1 => hot.start + rng.below(hot.len() as u64) as usize,
                    _ => rng.below(b.len() as u64) as usize,
                };
                b[at] ^= 1 << rng.below(8);
            }
        });
        if !ok {
            refused += 1
        } else if last_recovered() {
            recovered += 1
        } else {
            accepted += 1
        }
    }
    println!("random mutations: {accepted} accepted, {recovered} recovered, {refused} refused");
    assert!(refused + recovered > 100);
}

/// The active slot damaged (as by a torn write or a flipped bit): the open
/// falls back to the previous commit and says what was lost; a read-only
/// open changes nothing, and the next commit makes the heap whole again.
#[test]
fn fallback_to_the_previous_commit_is_reported() {
    let d = TempDir::new("recover");
    let p = d.file("r.bin");
    {
        let h = open(&p, 256 << 10);
        put_bytes(&h, "kept", 100, 1);
        put_bytes(&h, "gone", 100, 2);
    }
    let mut b = std::fs::read(&p).unwrap();
    let (active, slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    // Damage the catalog checksum field: the slot fails its own checksum,
    // its generation still reads.
    b[slot_offset(active) + 32] ^= 0x40;
    std::fs::write(&p, &b).unwrap();
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    let why = h.recovery().expect("a recovery report").to_string();
    assert!(
        why.contains(&format!("generation {}", slot.generation)),
        "{why}"
    );
    assert!(why.contains("'gone'"), "{why}");
    assert!(!why.contains("'kept'"), "{why}");
    let names: Vec<String> = h.list().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["kept"]);
    drop(h);
    assert_eq!(std::fs::read(&p).unwrap(), b, "a read-only open wrote");
    // A writable open commits over the damaged slot.
    {
        let h = open(&p, 256 << 10);
        assert!(h.recovery().is_some());
        put_bytes(&h, "new", 100, 3);
    }
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    assert!(h.recovery().is_none());
    let mut names: Vec<String> = h.list().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, ["kept", "new"]);
    assert_eq!(get_bytes(&h, "kept"), vec![1; 100]);
}

/// A slot claiming the largest generation (re-signed, so only the range
/// check can catch it) is invalid and reported; commits keep going, stay
/// visible, and the next one replaces it.
#[test]
fn generations_cannot_wrap() {
    let d = TempDir::new("gen");
    let p = d.file("g.bin");
    {
        let h = open(&p, 256 << 10);
        put_bytes(&h, "a", 10, 1);
    }
    let mut b = std::fs::read(&p).unwrap();
    let (active, slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    let other = slot_offset(1 - active);
    let hostile = Slot {
        generation: u64::MAX,
        ..slot
    };
    b[other..other + SLOT_SIZE].copy_from_slice(&hostile.encode());
    std::fs::write(&p, &b).unwrap();
    {
        // Announced: that slot might have held a newer commit.
        let h = open(&p, 256 << 10);
        let why = h.recovery().expect("a damaged slot is reported");
        assert!(why.contains("18446744073709551615"), "{why}");
        put_bytes(&h, "b", 10, 2);
        put_bytes(&h, "c", 10, 3);
    }
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    assert!(h.recovery().is_none());
    let mut names: Vec<String> = h.list().into_iter().map(|e| e.name).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
}

/// A flipped bit in a leaf page of the newest commit, written durably (no
/// crash leaves that): a read-only open reads the intact objects of that
/// commit; a writable open refuses, changing nothing, since falling back
/// would let its next commit replace the newest commit for good; with
/// `recover` it opens at the previous commit and says so. An unsynced
/// newest commit (what a power loss may tear) is still given up without
/// being asked.
#[test]
fn a_damaged_durable_commit_is_not_given_up_by_a_writable_open() {
    let d = TempDir::new("d8");
    let p = d.file("h.bin");
    {
        let h = open(&p, 1 << 20);
        put_bytes(&h, "first", 100, 1);
        for i in 0..400 {
            put_bytes(&h, &format!("object-with-a-long-name-{i:04}"), 16, 2);
        }
    }
    let orig = std::fs::read(&p).unwrap();
    // The newest commit's own leaf (the previous commit's copy of it, in
    // another page, lacks this name).
    let name = b"object-with-a-long-name-0399";
    let hits: Vec<usize> = orig
        .windows(name.len())
        .enumerate()
        .filter(|(_, w)| *w == name)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "the name is in one leaf record");
    let mut b = orig.clone();
    b[hits[0] + 3] ^= 0x01;
    let q = d.file("flipped.bin");
    std::fs::write(&q, &b).unwrap();
    let mtime = std::fs::metadata(&q).unwrap().modified().unwrap();

    // Read-only: the newest commit, whose other leaves read back.
    let (r, _) = Heap::open(&q, &ro()).unwrap();
    assert!(r.recovery().is_none());
    assert!(matches!(
        r.get("object-with-a-long-name-0399"),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(r.get("first").unwrap().blocks.len(), 1);
    drop(r);

    // Writable: refused, file untouched.
    let e = Heap::open(&q, &opts(1 << 20)).err().expect("refused");
    assert!(matches!(e, Error::Damaged { .. }), "{e}");
    assert_eq!(e.class(), "fmalloc_corrupt");
    let msg = e.to_string();
    assert!(
        msg.contains("readonly = TRUE") && msg.contains("recover = TRUE"),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(std::fs::read(&q).unwrap(), b);
    assert_eq!(std::fs::metadata(&q).unwrap().modified().unwrap(), mtime);

    // Asked to: the previous commit (the last object is not in it yet).
    let o = OpenOptions {
        recover: true,
        ..Default::default()
    };
    let (h, _) = Heap::open(&q, &o).unwrap();
    let why = h.recovery().expect("reported").to_string();
    assert!(why.contains("newest commit"), "{why}");
    assert!(h.get("object-with-a-long-name-0399").is_err());
    assert!(h.get("object-with-a-long-name-0398").is_ok());
    put_bytes(&h, "after", 8, 3);
    drop(h);
    let (h, _) = Heap::open(&q, &opts(1 << 20)).unwrap();
    assert!(h.recovery().is_none());
    assert!(h.get("after").is_ok());
    h.check_invariants().unwrap();
    drop(h);

    // Unsynced newest commit: given up by a writable open as before.
    let u = d.file("unsynced.bin");
    let lost = d.file("lost.bin");
    {
        let h = open(&u, 1 << 20);
        for i in 0..400 {
            put_bytes(&h, &format!("object-with-a-long-name-{i:04}"), 16, 2);
        }
        h.sync().unwrap();
        h.set_sync(SyncMode::None).unwrap();
        put_bytes(&h, "late", 16, 4);
        // A power loss: the unsynced commit's slot reached the disk, its
        // leaf page did not (taken as a byte flip in it here).
        let mut b = std::fs::read(&u).unwrap();
        let hits: Vec<usize> = b
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"late")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1);
        b[hits[0]] ^= 0x01;
        std::fs::write(&lost, &b).unwrap();
    }
    let (h, _) = Heap::open(&lost, &opts(1 << 20)).unwrap();
    assert!(h.recovery().is_some());
    assert!(h.get("late").is_err());
    assert!(h.get("object-with-a-long-name-0399").is_ok());
}

/// A damaged page that both commits share: no commit can be opened for
/// writing, but a read-only open reads what is outside that page, and the
/// refusal says so.
#[test]
fn a_page_damaged_in_both_commits_points_to_a_read_only_open() {
    let d = TempDir::new("shared");
    let p = d.file("h.bin");
    {
        let h = open(&p, 1 << 20);
        for i in 0..400 {
            put_bytes(&h, &format!("object-with-a-long-name-{i:04}"), 16, 2);
        }
    }
    let mut b = std::fs::read(&p).unwrap();
    let name = b"object-with-a-long-name-0123";
    let at = b.windows(name.len()).position(|w| w == name).unwrap();
    b[at + 3] ^= 0x01;
    std::fs::write(&p, &b).unwrap();
    for recover in [false, true] {
        let o = OpenOptions {
            recover,
            ..Default::default()
        };
        let e = Heap::open(&p, &o).err().expect("refused");
        assert!(e.to_string().contains("readonly = TRUE"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b);
    }
    let (r, _) = Heap::open(&p, &ro()).unwrap();
    assert!(r.get("object-with-a-long-name-0399").is_ok());
    assert!(r.get("object-with-a-long-name-0123").is_err());
}

/// One damaged leaf below the root (a read-only open checks the root only):
/// the listing gives the rows of every other leaf and says which page it
/// skipped and how many objects that hides; lookups in intact leaves work,
/// the check still reports the page. Before: the whole listing failed.
#[test]
fn a_damaged_leaf_hides_only_its_own_rows_from_a_listing() {
    let d = TempDir::new("ls8");
    let p = d.file("h.bin");
    let all: Vec<String> = (1..=300).map(|i| format!("obj{i:04}")).collect();
    {
        let h = open(&p, 1 << 20);
        for n in &all {
            put_bytes(&h, n, 8, 1);
        }
    }
    let mut b = std::fs::read(&p).unwrap();
    let (_, slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    let root = slot.catalog_off as usize;
    let page = tree::PAGE_SIZE;
    // The root is a branch (kind 2); its second record (the first is 32
    // bytes: key length 0) points to the second leaf, at record +8.
    assert_eq!(b[root + 8], 2, "the catalog has more than one leaf");
    let at = root + 32 + 32 + 8;
    let leaf = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let hidden: Vec<String> = tree::debug_leaf_entries(&b[leaf..leaf + page])
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(!hidden.is_empty() && hidden.len() < all.len());
    b[leaf + 100] ^= 0x01;
    std::fs::write(&p, &b).unwrap();

    let (h, _) = Heap::open(&p, &ro()).unwrap();
    let l = h.summaries().unwrap();
    let listed: Vec<&str> = l.rows.iter().map(|r| r.name.as_str()).collect();
    let expect: Vec<&str> = all
        .iter()
        .filter(|n| !hidden.contains(n))
        .map(String::as_str)
        .collect();
    assert_eq!(listed, expect);
    let u = l.unlisted.expect("the damaged page is reported");
    assert_eq!(u.pages, [leaf as u64]);
    assert_eq!(u.missing, hidden.len() as u64);
    assert_eq!(u.total, 300);
    let msg = u.message();
    assert!(msg.contains(&leaf.to_string()), "{msg}");
    assert!(
        msg.contains(&format!("{} of the 300 objects", hidden.len())),
        "{msg}"
    );
    // Lookups: intact leaves read, the damaged one is Corrupt.
    assert!(h.contains(expect[0]).unwrap());
    assert!(h.get(expect[expect.len() - 1]).is_ok());
    assert!(matches!(h.get(&hidden[0]), Err(Error::Corrupt { .. })));
    // The check reports the page, as before.
    let problems = h.check();
    assert!(
        problems
            .iter()
            .any(|q| q.problem.contains(&leaf.to_string())),
        "{problems:?}"
    );
}

/// Two damaged leaves: the check names each page (it named the first only,
/// where its documentation promises every problem), and the listing
/// skips both.
#[test]
fn the_check_names_every_damaged_catalog_page() {
    let d = TempDir::new("check-pages");
    let p = d.file("h.bin");
    {
        let h = open(&p, 1 << 20);
        for i in 1..=300 {
            put_bytes(&h, &format!("obj{i:04}"), 8, 1);
        }
    }
    let mut b = std::fs::read(&p).unwrap();
    let (_, slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    let root = slot.catalog_off as usize;
    assert_eq!(b[root + 8], 2, "the catalog has more than one leaf");
    // The root's records (32 bytes, then the key) point to the leaves at
    // record +8; the first and the third are damaged.
    let mut at = root + 32;
    let mut children = Vec::new();
    for _ in 0..3 {
        let key = u16::from_le_bytes(b[at..at + 2].try_into().unwrap()) as usize;
        children.push(u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap()) as usize);
        at += 32 + key;
    }
    let leaves = [children[0], children[2]];
    assert_ne!(leaves[0], leaves[1]);
    for &leaf in &leaves {
        b[leaf + 100] ^= 0x01;
    }
    std::fs::write(&p, &b).unwrap();
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    let problems = h.check();
    for leaf in leaves {
        assert!(
            problems
                .iter()
                .any(|q| q.problem.contains(&leaf.to_string())),
            "page {leaf} not named: {problems:#?}"
        );
    }
    assert_eq!(
        h.summaries().unwrap().unlisted.unwrap().pages,
        leaves.map(|l| l as u64)
    );
}

/// A branch record that points to its left sibling's page (the root
/// re-signed, so every checksum matches): the page was checked under the
/// sibling's key range first, and a page checked once was trusted after,
/// so the listing showed that page's names twice (out of order, the real
/// child's names missing) and lookups of the missing names found nothing.
/// The page's keys are checked against every range it is reached under.
#[test]
fn a_page_reached_under_two_key_ranges_is_refused() {
    let d = TempDir::new("twice");
    let p = d.file("h.bin");
    {
        let h = open(&p, 1 << 20);
        for i in 0..400 {
            put_bytes(&h, &format!("o{i:04}_{}", "x".repeat(40)), 16, 2);
        }
    }
    let orig = std::fs::read(&p).unwrap();
    let b = resigned(&orig, |page| {
        assert!(page[9] > 0, "the root is a branch");
        let count = u16::from_le_bytes([page[10], page[11]]) as usize;
        assert!(count > 4);
        let mut recs = Vec::new();
        let mut pos = 32;
        for _ in 0..count {
            recs.push(pos);
            pos += 32 + u16::from_le_bytes([page[pos], page[pos + 1]]) as usize;
        }
        let child3: Vec<u8> = page[recs[3] + 8..recs[3] + 32].to_vec();
        page[recs[4] + 8..recs[4] + 32].copy_from_slice(&child3);
    });
    let q = d.file("twice.bin");
    std::fs::write(&q, &b).unwrap();
    let (r, _) = Heap::open(&q, &ro()).unwrap();
    match r.summaries() {
        Err(e) => assert!(matches!(e, Error::Corrupt { .. }), "{e}"),
        Ok(l) => {
            let names: Vec<&str> = l.rows.iter().map(|x| x.name.as_str()).collect();
            assert!(names.windows(2).all(|w| w[0] < w[1]), "names out of order");
        }
    }
    // Every name is found, or its lookup is an error: never "not there".
    for i in 0..400 {
        let name = format!("o{i:04}_{}", "x".repeat(40));
        assert!(
            !matches!(r.get(&name), Err(Error::NotFound { .. })),
            "{name}"
        );
    }
    assert!(r.check_invariants().is_err());
}
