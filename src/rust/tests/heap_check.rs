//! `Heap::check` / `check_image` / `check_path`: every problem reported with
//! its object and part, nothing ever written, no panic on hostile files.

mod heap_util;

use std::path::Path;

use heap_util::*;
use rfmalloc::catalog::{tree, StoredEntry};
use rfmalloc::check::{check_image, check_path, Problem};
use rfmalloc::error::Error;
use rfmalloc::format::meta::{Payload, Summary, Writer};
use rfmalloc::format::{fnv1a64, pick_slot, slot_offset, HEADER_SIZE, SLOT_SIZE};
use rfmalloc::heap::{BlockDesc, ElemType, Heap};
use rfmalloc::prng::Rng;
use rfmalloc::strpool::{self, Encoding};

/// A meta v2 blob: one block node, or a list of block nodes.
fn meta_of(elems: &[ElemType]) -> Vec<u8> {
    let summary = Summary {
        type_name: if elems.len() == 1 { "vector" } else { "list" }.into(),
        class: String::new(),
        length: elems.len() as f64,
        dim: None,
    };
    let mut w = Writer::new(&summary).unwrap();
    if elems.len() != 1 {
        w.node(&Payload::List(elems.len() as u64), false, 0)
            .unwrap();
    }
    for (i, &elem) in elems.iter().enumerate() {
        let index = i as u32;
        w.node(&Payload::Block { index, elem }, false, 0).unwrap();
    }
    w.finish()
}

fn desc(off: u64, elem: ElemType, length: u64) -> BlockDesc {
    BlockDesc {
        offset: off,
        data_offset: off,
        elem,
        length,
    }
}

/// A heap with an integer vector ("ints"), a character vector ("strs") and
/// a list of a double and a raw vector ("list"), all readable by R.
fn sample(path: &Path) -> Heap {
    let h = open(path, 256 << 10);
    let ints = h.malloc(400).unwrap();
    write(&h, ints, &[7u8; 400]);
    h.put(
        "ints",
        &meta_of(&[ElemType::Integer]),
        &[desc(ints, ElemType::Integer, 100)],
        false,
    )
    .unwrap();
    h.release(ints).unwrap();

    let bytes = strpool::block_size(3, 256).unwrap();
    let strs = h.malloc(bytes).unwrap();
    let mut pool = vec![0u8; bytes as usize];
    let mut l = strpool::init(&mut pool, 3).unwrap();
    strpool::set(&mut pool, &mut l, 0, Some((b"a", Encoding::Utf8))).unwrap();
    strpool::set(&mut pool, &mut l, 1, Some((b"bc", Encoding::Native))).unwrap();
    write(&h, strs, &pool);
    h.put(
        "strs",
        &meta_of(&[ElemType::String]),
        &[desc(strs, ElemType::String, bytes)],
        false,
    )
    .unwrap();
    h.release(strs).unwrap();

    let d = h.malloc(80).unwrap();
    let r = h.malloc(5).unwrap();
    h.put(
        "list",
        &meta_of(&[ElemType::Double, ElemType::Raw]),
        &[desc(d, ElemType::Double, 10), desc(r, ElemType::Raw, 5)],
        false,
    )
    .unwrap();
    h.release(d).unwrap();
    h.release(r).unwrap();
    h
}

fn entry(h: &Heap, name: &str) -> rfmalloc::heap::Entry {
    h.get(name).unwrap()
}

/// The problems as (object, part) pairs, for assertions.
fn places(p: &[Problem]) -> Vec<(Option<&str>, &str)> {
    p.iter()
        .map(|x| (x.object.as_deref(), x.part.as_str()))
        .collect()
}

/// Rewrites the catalog in force with `edit` applied to its entries, every
/// checksum fixed, so that only the check's own validation can catch it.
fn resigned(orig: &[u8], edit: impl FnOnce(&mut Vec<StoredEntry>)) -> Vec<u8> {
    let mut b = orig.to_vec();
    let (i, mut slot) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64).unwrap();
    // The sample heap's catalog is one leaf page (the root).
    let off = slot.catalog_off as usize;
    let page = &mut b[off..off + tree::PAGE_SIZE];
    let mut entries = tree::debug_leaf_entries(page).unwrap();
    edit(&mut entries);
    slot.catalog_sum = tree::debug_write_leaf(page, &entries).unwrap();
    let at = slot_offset(i);
    b[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    b
}

fn find<'a>(p: &'a [Problem], object: &str, part: &str) -> &'a Problem {
    p.iter()
        .find(|x| x.object.as_deref() == Some(object) && x.part == part)
        .unwrap_or_else(|| panic!("no problem for {object}/{part} in {p:#?}"))
}

#[test]
fn a_clean_heap_has_no_problems_in_any_mode() {
    let d = TempDir::new("check-clean");
    let p = d.file("h.bin");
    let h = sample(&p);
    // An unnamed block of this session is no problem either.
    let extra = h.malloc(1000).unwrap();
    let before = std::fs::read(&p).unwrap();
    assert_eq!(h.check(), vec![]);
    assert!(
        std::fs::read(&p).unwrap() == before,
        "check wrote to the file"
    );
    h.release(extra).unwrap();
    h.check_invariants().unwrap();
    drop(h);
    let image = std::fs::read(&p).unwrap();
    assert_eq!(check_image(&image), vec![]);
    assert_eq!(check_path(&p).unwrap(), vec![]);
    let (ro, _) = Heap::open(&p, &ro()).unwrap();
    assert_eq!(ro.check(), vec![]);
    // A fresh heap (slot B never written, empty catalog).
    let q = d.file("fresh.bin");
    let h = open(&q, 128 << 10);
    assert_eq!(h.check(), vec![]);
}

#[test]
fn a_bad_string_element_names_its_object() {
    let d = TempDir::new("check-pool");
    let p = d.file("h.bin");
    let h = sample(&p);
    let strs = entry(&h, "strs").blocks[0].data_offset;
    // Element 2's index record: flags (high half of its second word) = 0x80.
    let at = strs + strpool::HEADER + strpool::ENTRY + 12;
    write(&h, at, &0x80u32.to_le_bytes());
    let before = std::fs::read(&p).unwrap();
    let got = h.check();
    assert!(
        std::fs::read(&p).unwrap() == before,
        "check wrote to the file"
    );
    assert_eq!(places(&got), [(Some("strs"), "string pool")], "{got:#?}");
    assert!(got[0].problem.contains("element 2"), "{}", got[0].problem);
    assert!(got[0].problem.contains("flags"), "{}", got[0].problem);
    // The same from the file, through a read-only open. (The close writes
    // the headers the next open's rebuild would write: read again.)
    drop(h);
    let before = std::fs::read(&p).unwrap();
    assert_eq!(check_path(&p).unwrap(), got);
    assert!(
        std::fs::read(&p).unwrap() == before,
        "check wrote to the file"
    );
}

#[test]
fn a_resigned_meta_that_does_not_decode_is_reported() {
    let d = TempDir::new("check-meta");
    let p = d.file("h.bin");
    let h = sample(&p);
    let meta_len = entry(&h, "ints").meta.len();
    drop(h);
    let orig = std::fs::read(&p).unwrap();
    // Version 9 in the meta blob, its checksum in the catalog fixed.
    let mut meta_off = 0;
    let mut b = resigned(&orig, |entries| {
        let e = entries.iter_mut().find(|e| e.name == "ints").unwrap();
        meta_off = e.meta_off as usize;
        let mut meta = orig[meta_off..meta_off + meta_len].to_vec();
        meta[4] = 9;
        e.meta_sum = fnv1a64(&meta);
    });
    b[meta_off + 4] = 9;
    std::fs::write(&p, &b).unwrap();
    let got = check_path(&p).unwrap();
    assert_eq!(places(&got), [(Some("ints"), "meta")], "{got:#?}");
    assert!(got[0].problem.contains("version 9"), "{}", got[0].problem);
    assert!(std::fs::read(&p).unwrap() == b, "check wrote to the file");
    // A meta that fails its checksum (what the open flags as damaged).
    b[meta_off + 4] = 2;
    std::fs::write(&p, &b).unwrap();
    let got = check_path(&p).unwrap();
    assert_eq!(places(&got), [(Some("ints"), "meta")], "{got:#?}");
    assert!(got[0].problem.contains("checksum"));
    // The writable handle checks the same file bytes, commits nothing.
    // (The open rewrites the allocator's in-band headers; the check writes
    // nothing.)
    let (h, _) = Heap::open(&p, &opts(0)).unwrap();
    assert!(h.list().iter().any(|e| e.damaged.is_some()));
    let opened = std::fs::read(&p).unwrap();
    assert_eq!(h.check(), got);
    assert!(
        std::fs::read(&p).unwrap() == opened,
        "check wrote to the file"
    );
}

#[test]
fn element_ranges_overlaps_and_types_are_checked_per_block() {
    let d = TempDir::new("check-blocks");
    let p = d.file("h.bin");
    drop(sample(&p));
    let orig = std::fs::read(&p).unwrap();

    // Block 2 of "list" claims more elements than its block holds: the open
    // refuses the file; a path check reports the open, an image check the
    // block.
    let b = resigned(&orig, |es| {
        let e = es.iter_mut().find(|e| e.name == "list").unwrap();
        e.blocks[1].length = e.blocks[1].capacity + 1;
    });
    let got = check_image(&b);
    assert_eq!(places(&got), [(Some("list"), "block 2")], "{got:#?}");
    assert!(got[0].problem.contains("exceed the block"));
    // A read-only open reads the catalog lazily: the path check opens the
    // file and reports the block, as the image check does.
    std::fs::write(&p, &b).unwrap();
    let got = check_path(&p).unwrap();
    assert_eq!(places(&got), [(Some("list"), "block 2")], "{got:#?}");
    assert!(std::fs::read(&p).unwrap() == b, "check wrote to the file");

    // "ints" points into the block of "list": an overlap.
    let b = resigned(&orig, |es| {
        let target = es.iter().find(|e| e.name == "list").unwrap().blocks[0];
        let e = es.iter_mut().find(|e| e.name == "ints").unwrap();
        e.blocks[0].offset = target.offset;
        e.blocks[0].data_offset = target.offset;
        e.blocks[0].capacity = target.capacity;
        e.blocks[0].length = 1;
    });
    let got = check_image(&b);
    assert!(
        got.iter().any(|x| x.problem.contains("overlaps")
            && (x.object.as_deref() == Some("ints") || x.object.as_deref() == Some("list"))),
        "{got:#?}"
    );

    // The catalog says double, the meta integer: opens, but is reported.
    let b = resigned(&orig, |es| {
        let e = es.iter_mut().find(|e| e.name == "ints").unwrap();
        e.blocks[0].elem = ElemType::Double;
        e.blocks[0].length = 50;
    });
    let got = check_image(&b);
    assert_eq!(places(&got), [(Some("ints"), "block 1")], "{got:#?}");
    assert!(got[0].problem.contains("Double"));

    // A capacity the allocator never gives: the allocator disagrees.
    let b = resigned(&orig, |es| {
        let e = es.iter_mut().find(|e| e.name == "ints").unwrap();
        e.blocks[0].capacity -= 8;
    });
    let got = check_image(&b);
    assert_eq!(places(&got), [(Some("ints"), "block 1")], "{got:#?}");
    assert!(got[0].problem.contains("capacity"), "{}", got[0].problem);

    // "list" names the block of its first vector twice, as a double and as
    // raw bytes: the same bytes read as two types.
    let b = resigned(&orig, |es| {
        let e = es.iter_mut().find(|e| e.name == "list").unwrap();
        let first = e.blocks[0];
        e.blocks[1] = first;
        e.blocks[1].elem = ElemType::Raw;
    });
    let got = check_image(&b);
    assert!(
        got.iter().any(|x| x.object.as_deref() == Some("list")
            && x.part == "block 2"
            && x.problem.contains("another type")),
        "{got:#?}"
    );

    // A meta-less entry cannot be read by R.
    let b = resigned(&orig, |es| {
        let e = es.iter_mut().find(|e| e.name == "ints").unwrap();
        (e.meta_off, e.meta_cap, e.meta_len, e.meta_sum) = (0, 0, 0, 0);
    });
    assert_eq!(places(&check_image(&b)), [(Some("ints"), "meta")]);
}

#[test]
fn header_slots_and_recovery_are_heap_level_rows() {
    let d = TempDir::new("check-slots");
    let p = d.file("h.bin");
    drop(sample(&p));
    let orig = std::fs::read(&p).unwrap();
    let (i, slot) = pick_slot(&orig[..HEADER_SIZE as usize], orig.len() as u64).unwrap();
    let slot_name = ["slot A", "slot B"][i];

    // The catalog in force damaged: the open falls back to the previous
    // commit, which the check reports.
    let mut b = orig.clone();
    b[slot.catalog_off as usize + 30] ^= 0x10;
    let got = check_image(&b);
    assert_eq!(
        places(&got),
        [(None, slot_name), (None, "recovery")],
        "{got:#?}"
    );
    std::fs::write(&p, &b).unwrap();
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    assert!(h.recovery().is_some());
    let from_handle = h.check();
    drop(h);
    assert!(from_handle
        .iter()
        .any(|x| x.part == "recovery" && x.object.is_none()));
    assert!(std::fs::read(&p).unwrap() == b, "check wrote to the file");

    // A damaged header: the open refuses; the image check says why.
    let mut b = orig.clone();
    b[20] ^= 1;
    assert_eq!(places(&check_image(&b)), [(None, "header")]);
    std::fs::write(&p, &b).unwrap();
    assert_eq!(places(&check_path(&p).unwrap()), [(None, "open")]);
    assert!(std::fs::read(&p).unwrap() == b, "check wrote to the file");
}

#[test]
fn paths_that_do_not_open_give_one_row_and_a_writer_lock_is_an_error() {
    let d = TempDir::new("check-path");
    let p = d.file("text.txt");
    std::fs::write(&p, b"hello\n").unwrap();
    let got = check_path(&p).unwrap();
    assert_eq!(places(&got), [(None, "open")]);
    assert!(got[0].problem.contains("not a valid Rfmalloc heap"));
    assert!(std::fs::read(&p).unwrap() == b"hello\n");
    let missing = d.file("missing.bin");
    assert_eq!(places(&check_path(&missing).unwrap()), [(None, "open")]);
    assert!(!missing.exists());
    // Open for writing in this process: the check cannot open it read-only.
    let q = d.file("h.bin");
    let h = sample(&q);
    assert!(matches!(check_path(&q), Err(Error::Locked { .. })));
    assert_eq!(h.check(), vec![]);
}

#[test]
fn a_damaged_allocator_header_is_found_through_a_writable_handle() {
    let d = TempDir::new("check-alloc");
    let p = d.file("h.bin");
    let h = sample(&p);
    let ints = entry(&h, "ints").blocks[0].offset;
    // The check tag of the block's in-band header (32 bytes before it).
    write(&h, ints - 24, &[0xAB; 8]);
    let got = h.check();
    assert!(got.iter().any(|x| x.part == "allocator"), "{got:#?}");
    let row = find(&got, "ints", "block 1");
    assert!(row.problem.contains("not a live allocator block"));
    // Read-only, the allocator is rebuilt from the catalog: no tag to check.
    drop(h);
    assert_eq!(check_path(&p).unwrap(), vec![]);
}

#[test]
fn random_damage_never_panics() {
    let d = TempDir::new("check-random");
    let p = d.file("h.bin");
    drop(sample(&p));
    let orig = std::fs::read(&p).unwrap();
    let (_, slot) = pick_slot(&orig[..HEADER_SIZE as usize], orig.len() as u64).unwrap();
    let entries =
        tree::debug_leaf_entries(&orig[slot.catalog_off as usize..][..tree::PAGE_SIZE]).unwrap();
    // The bytes that matter most: header page, catalog, metas, blocks.
    let mut hot: Vec<(u64, u64)> = vec![(0, 256), (slot.catalog_off, tree::PAGE_SIZE as u64)];
    for e in &entries {
        hot.push((e.meta_off, e.meta_len));
        for k in &e.blocks {
            hot.push((k.offset, k.capacity.min(512)));
        }
    }
    let mut rng = Rng::new(0x5eed);
    for round in 0..400 {
        let mut b = orig.clone();
        for _ in 0..1 + rng.below(4) {
            let (start, len) = hot[rng.below(hot.len() as u64) as usize];
            let at = (start + rng.below(len.max(1))) as usize;
            b[at] ^= 1 << rng.below(8);
        }
        // Half the rounds re-sign the catalog so that its content counts.
        if round % 2 == 0 {
            if let Ok((i, mut s)) = pick_slot(&b[..HEADER_SIZE as usize], b.len() as u64) {
                let r = s.catalog_off as usize..s.catalog_off as usize + tree::PAGE_SIZE;
                if r.end <= b.len() {
                    s.catalog_sum = tree::page_sum(&b[r]);
                    let at = slot_offset(i);
                    b[at..at + SLOT_SIZE].copy_from_slice(&s.encode());
                }
            }
        }
        let _ = check_image(&b);
    }
    // Truncated images.
    for len in [0, 10, 4096, 4200, 65536, orig.len() - 64] {
        let got = check_image(&orig[..len]);
        assert!(!got.is_empty(), "truncation to {len} passed");
    }
}

/// The catalog keeps a copy of each meta's summary (what `fmalloc_ls()`
/// shows). A copy damaged with every checksum fixed (a NUL byte, invalid
/// UTF-8, a length that is not a whole number in [0, 2^52]) is reported by
/// the check with the same decoding the listing uses, and a copy that
/// decodes but differs from the meta's is reported too.
#[test]
fn a_damaged_summary_copy_in_the_catalog_is_reported_as_the_listing_shows_it() {
    let d = TempDir::new("check-summary");
    let p = d.file("h.bin");
    drop(sample(&p));
    let orig = std::fs::read(&p).unwrap();
    // The sample's summaries: type, an empty class, then the length.
    fn length(s: &mut [u8], v: f64) {
        let at = 2 + s[0] as usize + 4;
        s[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    type Edit = fn(&mut Vec<u8>);
    let cases: [(Edit, &str); 6] = [
        (|s| s[2] = 0, "NUL byte"),
        (|s| s[2] = 0xff, "not UTF-8"),
        (|s| length(s, 1e300), "whole number"),
        (|s| length(s, 2.5), "whole number"),
        (|s| length(s, 2f64.powi(53) + 2.0), "whole number"),
        (|s| length(s, 7.0), "differs"),
    ];
    for (edit, why) in cases {
        let b = resigned(&orig, |entries| {
            let e = entries.iter_mut().find(|e| e.name == "ints").unwrap();
            edit(e.summary.as_mut().expect("the sample keeps summaries"));
        });
        std::fs::write(&p, &b).unwrap();
        let got = check_path(&p).unwrap();
        assert_eq!(places(&got), [(Some("ints"), "summary")], "{why}: {got:#?}");
        assert!(got[0].problem.contains(why), "{why}: {}", got[0].problem);
        // The listing calls the same entries damaged (except a copy that
        // decodes: the listing does not read the metas).
        let (h, _) = Heap::open(&p, &opts(0)).unwrap();
        let listed = h.summaries().unwrap().rows;
        let ints = listed.iter().find(|l| l.name == "ints").unwrap();
        let decoded = rfmalloc::format::meta::decode_summary_ref(ints.summary.as_ref().unwrap());
        assert_eq!(decoded.is_err(), why != "differs", "{why}");
        if let Err(e) = decoded {
            assert!(got[0].problem.ends_with(&e), "{} / {e}", got[0].problem);
        }
    }
}

/// An integer vector of class "factor" with the given levels (none: no
/// levels attribute) over block 0.
fn factor_meta(levels: Option<&[&str]>) -> Vec<u8> {
    let summary = Summary {
        type_name: "integer".into(),
        class: "factor".into(),
        length: 3.0,
        dim: None,
    };
    let chars = |v: &[&str]| {
        Payload::Character(
            v.iter()
                .map(|s| Some((s.as_bytes().to_vec(), Encoding::Utf8)))
                .collect(),
        )
    };
    let mut w = Writer::new(&summary).unwrap();
    let block = Payload::Block {
        index: 0,
        elem: ElemType::Integer,
    };
    w.node(&block, false, 1 + levels.is_some() as u32).unwrap();
    if let Some(l) = levels {
        w.attr_name(b"levels").unwrap();
        w.node(&chars(l), false, 0).unwrap();
    }
    w.attr_name(b"class").unwrap();
    w.node(&chars(&["factor"]), false, 0).unwrap();
    w.finish()
}

#[test]
fn unreadable_objects_and_bad_factor_codes_are_reported() {
    let d = TempDir::new("check-factor");
    let p = d.file("h.bin");
    let h = open(&p, 256 << 10);
    let codes = |v: [i32; 3]| v.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>();
    for (name, levels, data) in [
        ("good", Some(&["a", "b"][..]), codes([1, i32::MIN, 2])),
        ("bad_code", Some(&["a", "b"][..]), codes([1, 3, 0])),
        ("no_levels", None, codes([1, 1, 1])),
    ] {
        let off = h.malloc(12).unwrap();
        write(&h, off, &data);
        h.put(
            name,
            &factor_meta(levels),
            &[desc(off, ElemType::Integer, 3)],
            false,
        )
        .unwrap();
        h.release(off).unwrap();
    }
    let problems = h.check();
    assert_eq!(
        places(&problems),
        vec![(Some("bad_code"), "block 1"), (Some("no_levels"), "meta")]
    );
    assert_eq!(
        find(&problems, "bad_code", "block 1").problem,
        "2 factor code(s) are not a level (1 to 2), the first 3 at element 2"
    );
    assert_eq!(
        find(&problems, "no_levels", "meta").problem,
        "the object cannot be read: a factor without character levels"
    );
    drop(h);
    assert_eq!(check_path(&p).unwrap(), problems);
}
