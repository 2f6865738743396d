//! Create, reopen, grow, name: the heap facade as the R layer uses it.

mod heap_util;

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::{BlockDesc, ElemType, Heap, OpenOptions};
use rfmalloc::prng::Rng;

#[test]
fn create_then_reopen_keeps_values_and_heap_id() {
    let d = TempDir::new("basic");
    let p = d.file("h.bin");
    let (h, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(created);
    assert!(!h.is_readonly());
    let id = h.heap_id();
    let off = h.malloc(800).unwrap();
    let vals: Vec<u8> = (0..800u32).map(|i| (i * 7) as u8).collect();
    write(&h, off, &vals);
    h.put(
        "prices",
        b"meta!",
        &[BlockDesc {
            offset: off,
            data_offset: off,
            elem: ElemType::Double,
            length: 100,
        }],
        false,
    )
    .unwrap();
    h.check_invariants().unwrap();
    drop(h);

    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"RFMHEAP\0");
    assert_eq!(bytes.len(), 1 << 20);

    let (h, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(!created);
    assert_eq!(h.heap_id(), id);
    let e = h.get("prices").unwrap();
    assert_eq!(e.meta, b"meta!");
    assert_eq!(e.blocks[0].elem, ElemType::Double);
    assert_eq!(e.blocks[0].length, 100);
    assert_eq!(read(&h, e.blocks[0].data_offset, 800), vals);
    assert!(e.created_ms > 0 && e.modified_ms >= e.created_ms);
    h.check_invariants().unwrap();
    assert_eq!(h.info().objects, 1);
}

#[test]
fn empty_file_is_initialised_and_missing_file_created() {
    let d = TempDir::new("empty");
    let p = d.file("e.bin");
    std::fs::write(&p, b"").unwrap();
    let (h, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(created);
    drop(h);
    let q = d.file("new.bin");
    let (h, created) = Heap::open(&q, &opts(1 << 20)).unwrap();
    assert!(created);
    assert_eq!(h.info().file_bytes, 1 << 20);
    // Default size: 1 GiB, sparse.
    let r = d.file("default.bin");
    let (h2, _) = Heap::open(&r, &OpenOptions::default()).unwrap();
    assert_eq!(h2.info().file_bytes, 1 << 30);
    // A missing file is not created by a read-only open.
    let err = Heap::open(&d.file("nope.bin"), &ro()).err().unwrap();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!d.file("nope.bin").exists());
    // Nor is an empty file initialised read-only.
    std::fs::write(d.file("e2.bin"), b"").unwrap();
    let err = Heap::open(&d.file("e2.bin"), &ro()).err().unwrap();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert_eq!(std::fs::metadata(d.file("e2.bin")).unwrap().len(), 0);
}

#[test]
fn second_open_in_process_shares_the_heap() {
    let d = TempDir::new("share");
    let p = d.file("s.bin");
    let (a, _) = Heap::open(&p, &opts(1 << 20)).unwrap();
    let off = a.malloc(64).unwrap();
    // Another spelling of the same path finds the same open heap.
    let other = d.0.join(".").join("s.bin");
    let (b, created) = Heap::open(&other, &opts(1 << 20)).unwrap();
    assert!(!created);
    assert_eq!(a.heap_id(), b.heap_id());
    assert_eq!(a.ptr(off, 64).unwrap(), b.ptr(off, 64).unwrap());
    // The other mode is refused while it is open.
    let err = Heap::open(&p, &ro()).err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert_eq!(err.class(), "fmalloc_locked");
    drop((a, b));
    // Once the last clone is gone, the file can be opened read-only.
    let (r1, _) = Heap::open(&p, &ro()).unwrap();
    let (r2, _) = Heap::open(&p, &ro()).unwrap();
    assert!(r1.is_readonly() && r2.is_readonly());
}

#[test]
fn a_new_file_at_the_path_of_a_deleted_open_heap_is_another_heap() {
    let d = TempDir::new("replace");
    let p = d.file("r.bin");
    let (old, _) = Heap::open(&p, &opts(1 << 20)).unwrap();
    put_bytes(&old, "old", 32, 7);
    // A vector of the old heap lives on (its clone) while the file is
    // deleted and a new heap is created at the same path.
    let old_vector = old.clone();
    drop(old);
    std::fs::remove_file(&p).unwrap();
    let (new, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(
        created,
        "the new file must be formatted, not the old heap reused"
    );
    assert_ne!(new.heap_id(), old_vector.heap_id());
    assert!(new.get("old").is_err());
    put_bytes(&new, "new", 16, 9);
    // Still one heap per file: a second open of the new file shares it.
    let (again, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(!created);
    assert_eq!(again.heap_id(), new.heap_id());
    drop((new, again));
    // What was saved into the new heap is in the file at the path.
    let (r, _) = Heap::open(&p, &ro()).unwrap();
    assert_eq!(get_bytes(&r, "new"), vec![9; 16]);
    assert!(r.get("old").is_err());
    // The old heap still reads its own object.
    assert_eq!(get_bytes(&old_vector, "old"), vec![7; 32]);
}

#[test]
fn a_symbolic_link_to_an_open_heap_finds_the_same_heap() {
    #[cfg(unix)]
    {
        let d = TempDir::new("link");
        let p = d.file("t.bin");
        let l = d.file("link.bin");
        let (a, _) = Heap::open(&p, &opts(1 << 20)).unwrap();
        std::os::unix::fs::symlink(&p, &l).unwrap();
        let (b, created) = Heap::open(&l, &opts(1 << 20)).unwrap();
        assert!(!created);
        assert_eq!(a.heap_id(), b.heap_id());
    }
}

#[test]
fn mapping_outlives_the_handle_that_opened_it() {
    let d = TempDir::new("life");
    let p = d.file("l.bin");
    let (h, _) = Heap::open(&p, &opts(1 << 20)).unwrap();
    let off = h.malloc(16).unwrap();
    let vector_ref = h.clone(); // what an R vector holds
    let ptr = h.ptr(off, 16).unwrap();
    drop(h); // user closes the heap
             // SAFETY: `vector_ref` keeps the mapping alive.
    unsafe { ptr.as_ptr().write(42) };
    assert_eq!(read(&vector_ref, off, 1), [42]);
    assert_eq!(vector_ref.offset_of(ptr.as_ptr()), Some(off));
}

#[test]
fn readonly_heap_refuses_every_change() {
    let d = TempDir::new("ro");
    let p = d.file("r.bin");
    {
        let h = open(&p, 1 << 20);
        put_bytes(&h, "x", 100, 9);
    }
    let before = std::fs::read(&p).unwrap();
    let (h, created) = Heap::open(&p, &ro()).unwrap();
    assert!(!created && h.is_readonly());
    assert_eq!(get_bytes(&h, "x"), vec![9; 100]);
    let off = h.get("x").unwrap().blocks[0].offset;
    let ro_err = |r: Result<(), Error>| assert!(matches!(r, Err(Error::ReadOnly { .. })));
    assert!(matches!(h.malloc(10), Err(Error::ReadOnly { .. })));
    assert!(matches!(h.realloc(off, 10), Err(Error::ReadOnly { .. })));
    ro_err(h.put("y", b"", &[], false));
    ro_err(h.remove("x"));
    ro_err(h.rename("x", "y", false));
    // Retain/release of named blocks is bookkeeping only.
    h.retain(off).unwrap();
    h.release(off).unwrap();
    h.sync().unwrap();
    assert!(h.block_size(off).unwrap() >= 100);
    h.check_invariants().unwrap();
    let info = h.info();
    assert!(info.readonly && info.objects == 1 && info.used_bytes > 0);
    drop(h);
    assert_eq!(
        std::fs::read(&p).unwrap(),
        before,
        "read-only open changed the file"
    );
}

#[test]
fn growth_keeps_old_pointers_valid_and_persists() {
    let d = TempDir::new("grow");
    let p = d.file("g.bin");
    let h = open(&p, 1 << 20);
    let first = h.malloc(4096).unwrap();
    let old_ptr = h.ptr(first, 4096).unwrap();
    let mut names = Vec::new();
    for i in 0..40u64 {
        // 40 x 200 KiB: far beyond the initial 1 MiB.
        let len = 200 << 10;
        put_bytes(&h, &format!("v{i}"), len, i as u8);
        names.push(i);
    }
    assert!(h.debug_extent_count() > 2, "heap did not grow");
    assert!(h.info().file_bytes > 8 << 20);
    assert_eq!(h.ptr(first, 4096).unwrap(), old_ptr, "old block moved");
    // SAFETY: the block is live and mapped; nothing else aliases it.
    unsafe { std::ptr::write_bytes(old_ptr.as_ptr(), 0xab, 4096) };
    h.put("first", b"", &[raw(first, 4096)], false).unwrap();
    // A block bigger than the whole heap so far.
    let big = h.malloc(32 << 20).unwrap();
    write(&h, big + (32 << 20) - 3, b"end");
    h.put("big", b"", &[raw(big, 32 << 20)], false).unwrap();
    h.check_invariants().unwrap();
    let len = h.info().file_bytes;
    drop(h);

    assert_eq!(std::fs::metadata(&p).unwrap().len(), len);
    let h = open(&p, 1 << 20);
    assert_eq!(h.debug_extent_count(), 1);
    assert_eq!(get_bytes(&h, "first"), vec![0xab; 4096]);
    for i in names {
        assert_eq!(get_bytes(&h, &format!("v{i}")), vec![i as u8; 200 << 10]);
    }
    let b = h.get("big").unwrap().blocks[0].offset;
    assert_eq!(read(&h, b + (32 << 20) - 3, 3), b"end");
    h.check_invariants().unwrap();
}

#[cfg(unix)]
#[test]
fn fifty_gigabyte_heap_is_sparse() {
    use std::os::unix::fs::MetadataExt;
    let d = TempDir::new("sparse");
    let p = d.file("big.bin");
    // (How long this takes is measured by bench/open.R, not asserted here.)
    let (h, created) = Heap::open(&p, &opts(50_000_000_000)).unwrap();
    let off = h.malloc(1 << 20).unwrap();
    write(&h, off, &[1; 1 << 20]);
    h.put("one_mb", b"", &[raw(off, 1 << 20)], false).unwrap();
    h.sync().unwrap();
    assert!(created);
    let m = std::fs::metadata(&p).unwrap();
    assert!(m.len() >= 50_000_000_000);
    let on_disk = m.blocks() * 512;
    // One reservation chunk (4 MiB) plus a few pages.
    assert!(on_disk < 40 << 20, "{on_disk} bytes on disk");
    drop(h);
    let h = open(&p, 0);
    assert_eq!(get_bytes(&h, "one_mb"), vec![1; 1 << 20]);
}

#[test]
fn catalog_put_get_list_remove_rename() {
    let d = TempDir::new("cat");
    let p = d.file("c.bin");
    let h = open(&p, 1 << 20);
    put_bytes(&h, "b", 10, 2);
    put_bytes(&h, "a", 10, 1);
    let names: Vec<String> = h.list().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a", "b"]);

    // put without overwrite refuses an existing name, and changes nothing.
    let off = h.malloc(10).unwrap();
    let err = h.put("a", b"", &[raw(off, 10)], false).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }), "{err}");
    assert_eq!(get_bytes(&h, "a"), vec![1; 10]);
    // With overwrite it replaces, and the old block is freed.
    let old_a = h.get("a").unwrap().blocks[0].offset;
    write(&h, off, &[7; 10]);
    h.put("a", b"new", &[raw(off, 10)], true).unwrap();
    h.release(off).unwrap();
    assert_eq!(get_bytes(&h, "a"), vec![7; 10]);
    assert_eq!(h.get("a").unwrap().meta, b"new");
    assert!(h.block_size(old_a).is_err(), "replaced block still live");
    h.check_invariants().unwrap();

    // rename
    h.rename("a", "c", false).unwrap();
    assert!(matches!(h.get("a"), Err(Error::NotFound { .. })));
    assert_eq!(get_bytes(&h, "c"), vec![7; 10]);
    let err = h.rename("c", "b", false).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }));
    let b_off = h.get("b").unwrap().blocks[0].offset;
    h.rename("c", "b", true).unwrap();
    assert_eq!(get_bytes(&h, "b"), vec![7; 10]);
    assert!(h.block_size(b_off).is_err(), "overwritten target not freed");
    assert!(matches!(
        h.rename("zz", "y", false),
        Err(Error::NotFound { .. })
    ));
    h.rename("b", "b", false).unwrap();
    h.check_invariants().unwrap();

    // remove
    h.remove("b").unwrap();
    assert!(h.list().is_empty());
    assert!(matches!(h.remove("b"), Err(Error::NotFound { .. })));
    h.check_invariants().unwrap();
    assert_eq!(h.info().objects, 0);

    // names
    let off = h.malloc(8).unwrap();
    for bad in ["", "a\0b", &"n".repeat(256)] {
        let err = h.put(bad, b"", &[raw(off, 8)], false).unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{bad:?}: {err}");
    }
    h.put(&"n".repeat(255), b"", &[raw(off, 8)], false).unwrap();
    h.put("日本語 ✓", b"", &[], false).unwrap();
    assert!(h.rename("日本語 ✓", "", false).is_err());
    drop(h);
    let h = open(&p, 1 << 20);
    assert!(h.get(&"n".repeat(255)).is_ok());
    assert!(h.get("日本語 ✓").unwrap().blocks.is_empty());
    h.check_invariants().unwrap();
}

#[test]
fn named_owner_follows_every_catalog_change() {
    let named_desc = |h: &Heap, off| h.named_owner(off).map(|(d, _)| d);
    // `named_owner` answers from a table of the named blocks built once per
    // catalog (one walk of the catalog per call made a reference to one
    // object among 64 000 cost 28 ms): it must follow every change.
    let d = TempDir::new("desc");
    let h = open(&d.file("d.bin"), 1 << 20);
    let a = h.malloc(16).unwrap();
    h.put("a", b"", &[raw(a, 16)], false).unwrap();
    h.release(a).unwrap();
    assert_eq!(named_desc(&h, a), Some(raw(a, 16)));
    let b = h.malloc(24).unwrap();
    assert_eq!(named_desc(&h, b), None, "not named yet");
    h.put("b", b"", &[raw(b, 24)], false).unwrap();
    h.release(b).unwrap();
    assert_eq!(named_desc(&h, b), Some(raw(b, 24)));
    // Renaming keeps the blocks; removing frees them (and the offset may
    // be handed out again, unnamed).
    h.rename("b", "c", false).unwrap();
    assert_eq!(named_desc(&h, b), Some(raw(b, 24)));
    h.remove("a").unwrap();
    assert_eq!(named_desc(&h, a), None);
    let again = h.malloc(16).unwrap();
    assert_eq!(named_desc(&h, again), None);
    // In a batch, and after its rollback.
    h.begin_batch().unwrap();
    h.put("x", b"", &[raw(again, 16)], false).unwrap();
    assert_eq!(named_desc(&h, again), Some(raw(again, 16)));
    h.abort_batch();
    assert_eq!(named_desc(&h, again), None);
    assert_eq!(named_desc(&h, b), Some(raw(b, 24)));
    h.check_invariants().unwrap();
}

#[test]
fn put_checks_the_blocks_it_names() {
    let d = TempDir::new("putcheck");
    let h = open(&d.file("p.bin"), 1 << 20);
    let a = put_bytes(&h, "a", 100, 1);
    // A block named by another entry.
    let err = h.put("b", b"", &[raw(a, 100)], false).unwrap_err();
    assert!(err.to_string().contains("another named object"), "{err}");
    // Not a live block.
    let err = h.put("b", b"", &[raw(a + 64, 10)], false).unwrap_err();
    assert!(err.to_string().contains("not a live block"), "{err}");
    // Data beyond the block.
    let off = h.malloc(100).unwrap();
    let cap = h.block_size(off).unwrap();
    let err = h.put("b", b"", &[raw(off, cap + 1)], false).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err}");
    let bad_data = BlockDesc {
        offset: off,
        data_offset: off - 16,
        elem: ElemType::Raw,
        length: 1,
    };
    assert!(h.put("b", b"", &[bad_data], false).is_err());
    // The same block twice in one entry is fine (a list holding x twice).
    h.put("b", b"", &[raw(off, 10), raw(off, 20)], false)
        .unwrap();
    assert!(h.list().iter().all(|e| e.name != "c"));
    h.check_invariants().unwrap();
}

#[test]
fn references_keep_blocks_alive() {
    let d = TempDir::new("refs");
    let h = open(&d.file("r.bin"), 1 << 20);
    let base = h.info().used_bytes;
    let off = h.malloc(1000).unwrap();
    h.retain(off).unwrap();
    h.release(off).unwrap();
    assert!(h.block_size(off).unwrap() >= 1000);
    h.put("x", b"", &[raw(off, 1000)], false).unwrap();
    h.release(off).unwrap(); // count 0 but named: stays
    assert!(h.block_size(off).is_ok());
    assert!(h.release(off).is_err(), "released below zero");
    h.retain(off).unwrap(); // a vector over the named block
    h.remove("x").unwrap(); // unnamed, still referenced: stays
    assert!(h.block_size(off).is_ok());
    h.check_invariants().unwrap();
    h.release(off).unwrap(); // last reference: freed
    assert!(h.block_size(off).is_err());
    assert!(h.retain(off).is_err());
    h.check_invariants().unwrap();
    assert_eq!(h.info().used_bytes, base);
}

#[test]
fn unnamed_blocks_are_reclaimed_on_reopen() {
    let d = TempDir::new("reclaim");
    let p = d.file("u.bin");
    let h = open(&p, 4 << 20);
    put_bytes(&h, "keep", 5000, 5);
    let named_used = h.info().used_bytes;
    for _ in 0..50 {
        let _leaked = h.malloc(10_000).unwrap();
    }
    assert!(h.info().used_bytes > named_used + 50 * 10_000);
    drop(h);
    let h = open(&p, 4 << 20);
    assert_eq!(h.info().used_bytes, named_used);
    assert_eq!(get_bytes(&h, "keep"), vec![5; 5000]);
    h.check_invariants().unwrap();
}

#[test]
fn realloc_grows_shrinks_and_moves_with_data() {
    let d = TempDir::new("realloc");
    let h = open(&d.file("r.bin"), 1 << 20);
    let off = h.malloc(100).unwrap();
    let data: Vec<u8> = (0..100).collect();
    write(&h, off, &data);
    let blocker = h.malloc(64).unwrap(); // right after: forces a move
    let moved = h.realloc(off, 300_000).unwrap();
    assert_ne!(moved, off);
    assert_eq!(read(&h, moved, 100), data);
    assert!(h.block_size(moved).unwrap() >= 300_000);
    assert!(h.block_size(off).is_err());
    let same = h.realloc(moved, 50).unwrap();
    assert_eq!(same, moved);
    assert_eq!(read(&h, same, 50), data[..50]);
    write(&h, blocker, &[7; 64]);
    h.put("n", b"", &[raw(blocker, 64)], false).unwrap();
    // A named block is never resized or moved: the caller gets a copy.
    let copy = h.realloc(blocker, 10).unwrap();
    assert_ne!(copy, blocker, "named block resized");
    assert_eq!(read(&h, copy, 10), vec![7; 10]);
    assert_eq!(read(&h, blocker, 64), vec![7; 64]);
    assert!(h.is_named(blocker) && !h.is_named(copy));
    assert_eq!((h.holders(blocker), h.holders(copy)), (0, 1));
    h.release(copy).unwrap();
    // Far beyond the heap: grows.
    let huge = h.realloc(same, 8 << 20).unwrap();
    assert_eq!(read(&h, huge, 50), data[..50]);
    h.check_invariants().unwrap();
    assert!(matches!(h.malloc(u64::MAX), Err(Error::Full { .. })));
    assert!(matches!(h.malloc(1 << 62), Err(Error::Full { .. })));
    h.check_invariants().unwrap();
}

#[test]
fn ptr_refuses_the_header_and_ranges_outside() {
    let d = TempDir::new("ptr");
    let h = open(&d.file("p.bin"), 1 << 20);
    assert!(h.ptr(0, 8).is_err());
    assert!(h.ptr(4000, 8).is_err());
    assert!(h.ptr((1 << 20) - 4, 8).is_err());
    assert!(h.ptr(u64::MAX, 1).is_err());
    assert!(h.ptr(4096, 8).is_ok());
    assert_eq!(h.offset_of(std::ptr::null()), None);
    let off = h.malloc(8).unwrap();
    assert_eq!(h.offset_of(h.ptr(off, 8).unwrap().as_ptr()), Some(off));
}

#[test]
fn write_reaches_the_mapping_and_the_file_small_or_large() {
    let d = TempDir::new("write");
    let p = d.file("w.bin");
    let h = open(&p, 8 << 20);
    let off = h.malloc(3 << 20).unwrap();
    // Touch the block through the mapping first: its pages are mapped
    // when the large run goes through the file.
    write(&h, off, &[1; 64]);
    let big: Vec<u8> = (0..(2u32 << 20) + 5).map(|i| (i % 251) as u8).collect();
    h.write(off + 3, &big).unwrap(); // a large run, not page-aligned
    h.write(off + 1, &[7, 8]).unwrap(); // a small one
    let mut want = vec![1u8; 3];
    want[1..3].copy_from_slice(&[7, 8]);
    want.extend_from_slice(&big);
    assert_eq!(
        read(&h, off, want.len() as u64),
        want,
        "the mapping sees both"
    );
    drop(h);
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[off as usize..off as usize + want.len()], &want[..]);
}

#[test]
fn write_refuses_the_header_ranges_outside_and_readonly_heaps() {
    let d = TempDir::new("wbad");
    let p = d.file("b.bin");
    let h = open(&p, 1 << 20);
    assert!(matches!(h.write(0, &[1; 8]), Err(Error::Invalid(_))));
    assert!(matches!(
        h.write((1 << 20) - 4, &[1; 8]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(h.write(u64::MAX, &[1]), Err(Error::Invalid(_))));
    let big = vec![1u8; 2 << 20];
    assert!(matches!(h.write(4096, &big), Err(Error::Invalid(_))));
    drop(h);
    let before = std::fs::read(&p).unwrap();
    let (h, _) = Heap::open(&p, &ro()).unwrap();
    assert!(matches!(
        h.write(4096, &[1; 8]),
        Err(Error::ReadOnly { .. })
    ));
    drop(h);
    assert_eq!(std::fs::read(&p).unwrap(), before);
}

#[test]
fn info_reports_sizes() {
    let d = TempDir::new("info");
    let p = d.file("i.bin");
    let h = open(&p, 2 << 20);
    let i0 = h.info();
    assert_eq!(i0.file_bytes, 2 << 20);
    assert_eq!(i0.objects, 0);
    put_bytes(&h, "a", 100_000, 1);
    let i1 = h.info();
    assert!(i1.used_bytes >= i0.used_bytes + 100_000);
    assert!(i1.free_bytes + 100_000 <= i0.free_bytes);
    assert_eq!(i1.objects, 1);
    // The canonical path, in the form users know (no `\\?\` on Windows).
    assert_eq!(
        std::fs::canonicalize(&i1.path).unwrap(),
        std::fs::canonicalize(&p).unwrap()
    );
    assert!(i1.path.is_absolute());
    assert!(!i1.path.to_string_lossy().starts_with(r"\\?\"));
    #[cfg(unix)]
    assert_eq!(i1.path, std::fs::canonicalize(&p).unwrap());
}

/// New reservation chunks are brought into memory by writing zeros into
/// their holes (map::Mapping::prefault): that must never touch a block's
/// bytes, whether written in this session, before a reopen, or in a chunk
/// reached by growth.
#[test]
fn prefaulting_new_chunks_keeps_every_block() {
    let d = TempDir::new("prefault");
    let p = d.file("p.bin");
    let h = open(&p, 6 << 20);
    let mut rng = Rng::new(0x9e37_79b9);
    let mut live: Vec<(u64, u64, u8)> = Vec::new();
    let check = |h: &Heap, live: &[(u64, u64, u8)]| {
        for &(off, len, fill) in live {
            assert!(
                read(h, off, len).iter().all(|&b| b == fill),
                "block at {off}"
            );
        }
    };
    // About 27 MiB of live blocks: several chunks, and growth past 6 MiB.
    for i in 0..400u64 {
        let len = 1 + rng.below(200 << 10);
        let off = h.malloc(len).unwrap();
        let fill = (i % 250 + 1) as u8;
        write(&h, off, &vec![fill; len as usize]);
        live.push((off, len, fill));
        if i % 3 == 0 {
            let (off, _, _) = live.swap_remove(rng.below(live.len() as u64) as usize);
            h.release(off).unwrap();
        }
    }
    check(&h, &live);
    assert!(h.info().file_bytes > 16 << 20);
    // Name them all, reopen (the reservation starts over), add more.
    for (i, &(off, len, _)) in live.iter().enumerate() {
        h.put(&format!("b{i}"), b"", &[raw(off, len)], false)
            .unwrap();
        h.release(off).unwrap();
    }
    drop(h);
    let h = open(&p, 0);
    check(&h, &live);
    for _ in 0..100 {
        let len = 1 + rng.below(400 << 10);
        let off = h.malloc(len).unwrap();
        write(&h, off, &vec![0xEE; len as usize]);
        live.push((off, len, 0xEE));
    }
    check(&h, &live);
    h.check_invariants().unwrap();
}

/// A freed big block's whole chunks go back to the file system: the file's
/// disk use drops, and the space works (and is reserved) again when reused.
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
#[test]
fn freeing_a_big_block_punches_a_hole() {
    const MIB: u64 = 1 << 20;
    let d = TempDir::new("punch");
    let h = open(&d.file("p.bin"), 64 * MIB);
    let keep = h.malloc(4096).unwrap();
    write(&h, keep, &[7; 4096]);
    let big = h.malloc(32 * MIB).unwrap();
    write(&h, big, &vec![1u8; (32 * MIB) as usize]);
    h.sync().unwrap();
    let full = h.info().disk_bytes.unwrap();
    assert!(full >= 32 * MIB, "{full}");
    h.release(big).unwrap();
    let after = h.info().disk_bytes.unwrap();
    assert!(after + 24 * MIB <= full, "disk use {full} -> {after}");
    h.check_invariants().unwrap();
    let again = h.malloc(32 * MIB).unwrap();
    write(&h, again, &vec![2u8; (32 * MIB) as usize]);
    assert_eq!(read(&h, again + 16 * MIB, 8), vec![2u8; 8]);
    assert_eq!(read(&h, keep, 8), vec![7u8; 8]);
    h.sync().unwrap();
    assert!(h.info().disk_bytes.unwrap() >= after + 24 * MIB);
    h.check_invariants().unwrap();
}

/// Blocks too small to hold a whole chunk each, freed side by side (a data
/// frame's columns), merge into a region whose chunks are punched.
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
#[test]
fn freeing_neighbours_punches_the_merged_region() {
    const MIB: u64 = 1 << 20;
    let d = TempDir::new("punch2");
    let h = open(&d.file("p.bin"), 128 * MIB);
    let blocks: Vec<u64> = (0..10).map(|_| h.malloc(6 * MIB).unwrap()).collect();
    for &b in &blocks {
        write(&h, b, &vec![3u8; (6 * MIB) as usize]);
    }
    h.sync().unwrap();
    let full = h.info().disk_bytes.unwrap();
    for b in blocks {
        h.release(b).unwrap();
    }
    let after = h.info().disk_bytes.unwrap();
    assert!(after + 40 * MIB <= full, "disk use {full} -> {after}");
    h.check_invariants().unwrap();
}

/// Blocks under 1 MiB freed side by side keep their space reserved for the
/// next allocations (churn of small vectors must not re-reserve and
/// re-fault it); a large block freed after them still punches its chunks.
#[cfg(any(target_os = "linux", target_vendor = "apple"))]
#[test]
fn small_blocks_keep_their_space_until_a_large_one_merges() {
    const MIB: u64 = 1 << 20;
    let d = TempDir::new("punch3");
    let h = open(&d.file("p.bin"), 128 * MIB);
    let small: Vec<u64> = (0..300).map(|_| h.malloc(64 << 10).unwrap()).collect();
    let big = h.malloc(16 * MIB).unwrap();
    for &b in &small {
        write(&h, b, &[5u8; 64 << 10]);
    }
    write(&h, big, &vec![6u8; (16 * MIB) as usize]);
    h.sync().unwrap();
    let full = h.info().disk_bytes.unwrap();
    for &b in &small {
        h.release(b).unwrap();
    }
    let kept = h.info().disk_bytes.unwrap();
    assert!(
        kept + 4 * MIB > full,
        "small frees punched: {full} -> {kept}"
    );
    h.check_invariants().unwrap();
    // The space is reused as it is.
    let again: Vec<u64> = (0..300).map(|_| h.malloc(64 << 10).unwrap()).collect();
    for &b in &again {
        write(&h, b, &[7u8; 64 << 10]);
    }
    for &b in &again {
        h.release(b).unwrap();
    }
    h.release(big).unwrap();
    let after = h.info().disk_bytes.unwrap();
    assert!(after + 12 * MIB <= full, "disk use {full} -> {after}");
    h.check_invariants().unwrap();
}

/// `malloc_zeroed` gives zeros in every case: fresh space (not written),
/// a recycled block (zeroed on reuse), growth, and after a reopen, where
/// the space an unnamed block of the last session used is no hole any
/// more but must still read as zeros.
#[test]
fn malloc_zeroed_reads_zeros_fresh_recycled_and_after_reopen() {
    let d = TempDir::new("zeroed");
    let p = d.file("z.bin");
    // Room to spare: the end of the file stays a hole (fresh after reopen).
    let h = open(&p, 64 << 20);
    let n = 3 << 20;
    let is_zero = |h: &Heap, off: u64| read(h, off, n).iter().all(|&b| b == 0);
    let a = h.malloc_zeroed(n).unwrap();
    assert!(is_zero(&h, a));
    write(&h, a, &vec![0xAB; n as usize]);
    h.release(a).unwrap();
    // Recycled: the same space, zeroed again.
    let b = h.malloc_zeroed(n).unwrap();
    assert_eq!(b, a);
    assert!(is_zero(&h, b));
    write(&h, b, &vec![0xCD; n as usize]);
    let c = h.malloc_zeroed(3 * n).unwrap();
    assert!(read(&h, c, 3 * n).iter().all(|&x| x == 0));
    write(&h, c, &vec![0xEF; 3 * n as usize]);
    h.check_invariants().unwrap();
    drop(h);
    // Reopen: every unnamed block is gone, its bytes are still in the file
    // (the rest of the file is a hole).
    let h = open(&p, 64 << 20);
    for _ in 0..12 {
        let z = h.malloc_zeroed(n).unwrap();
        assert!(is_zero(&h, z), "block {z} after reopen");
        write(&h, z, &vec![0x11; n as usize]);
    }
    // Growth: fresh space past the old end of the file.
    let g = h.malloc_zeroed(64 << 20).unwrap();
    assert!(read(&h, g, 64 << 20).iter().all(|&x| x == 0));
    h.check_invariants().unwrap();
}

#[test]
fn writable_reopen_keeps_entries_with_block_lists_and_writes_nothing_twice() {
    // Entries of 1, 8 (inline) and 12 blocks (a block list block), one
    // block named twice: a writable open reads only where the blocks are
    // (heap::load_live) and must rebuild exactly the live set.
    let dir = TempDir::new("reopen-lists");
    let p = dir.file("h.bin");
    let mut offs = Vec::new();
    {
        let h = open(&p, 8 << 20);
        for (name, k) in [("one", 1u64), ("eight", 8), ("twelve", 12)] {
            let blocks: Vec<_> = (0..k)
                .map(|i| {
                    let off = h.malloc(100 + i * 10).unwrap();
                    write(&h, off, &[k as u8; 100]);
                    offs.push(off);
                    raw(off, 100)
                })
                .collect();
            let mut named = blocks.clone();
            named.push(blocks[0].clone()); // the same block twice
            h.put(name, &[k as u8; 3], &named, false).unwrap();
            for b in &blocks {
                h.release(b.offset).unwrap();
            }
        }
        put_bytes(&h, "gone", 5000, 9);
        h.remove("gone").unwrap();
        h.check_invariants().unwrap();
    }
    let h = Heap::open(&p, &opts(0)).unwrap().0;
    h.check_invariants().unwrap();
    for (name, k) in [("one", 1usize), ("eight", 8), ("twelve", 12)] {
        let e = h.get(name).unwrap();
        assert_eq!(e.blocks.len(), k + 1);
        for b in &e.blocks {
            assert_eq!(read(&h, b.data_offset, 100), vec![k as u8; 100]);
            assert!(h.is_named(b.offset));
        }
    }
    // New allocations avoid every named block.
    for _ in 0..50 {
        let off = h.malloc(120).unwrap();
        assert!(!offs.contains(&off));
    }
    drop(h);
    // Reopened once with this version's headers, a further writable open
    // and close leaves the file's bytes as they are.
    drop(Heap::open(&p, &opts(0)).unwrap().0);
    let before = std::fs::read(&p).unwrap();
    let h = Heap::open(&p, &opts(0)).unwrap().0;
    h.check_invariants().unwrap();
    drop(h);
    assert!(std::fs::read(&p).unwrap() == before);
}

#[test]
fn the_first_writable_reopen_after_a_clean_close_changes_no_byte() {
    // A session of saves, removals and unnamed blocks freed (small ones go
    // to the allocator's cache, others merge into free lists linked in the
    // order they were freed), closed cleanly: the next writable open and
    // close writes nothing (before, the open's rebuild merged the cached
    // blocks and relinked the free lists: bytes changed once).
    // Also for a heap that grew (mapped in pieces).
    for (size, big) in [(8u64 << 20, 0u64), (256 << 10, 600_000)] {
        let dir = TempDir::new("reopen-settled");
        let p = dir.file("h.bin");
        {
            let h = open(&p, size);
            for i in 0..31u64 {
                let len = if i % 10 == 9 { big.max(8) } else { 8 * (i + 1) };
                put_bytes(&h, &format!("o{i}"), len, i as u8);
            }
            for i in [3u64, 7, 8, 20, 21, 25] {
                h.remove(&format!("o{i}")).unwrap();
            }
            for len in [100u64, 3000, 40, 70_000, 500] {
                let off = h.malloc(len).unwrap();
                h.release(off).unwrap();
            }
            put_bytes(&h, "o3", 4000, 3);
            h.check_invariants().unwrap();
        }
        let before = std::fs::read(&p).unwrap();
        assert!(
            big == 0 || before.len() as u64 > size,
            "the heap did not grow"
        );
        let h = Heap::open(&p, &opts(0)).unwrap().0;
        h.check_invariants().unwrap();
        assert_eq!(get_bytes(&h, "o3"), vec![3u8; 4000]);
        drop(h);
        let after = std::fs::read(&p).unwrap();
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(
            changed.is_empty(),
            "{} bytes changed: {:?}",
            changed.len(),
            &changed[..changed.len().min(20)]
        );
    }
}

#[test]
fn a_refused_creation_leaves_no_file_it_made_and_an_empty_file_empty() {
    let d = TempDir::new("refused");
    // More than any file system here takes (1 EiB): set_len fails.
    let huge = opts(1 << 60);
    let p = d.file("new.bin");
    let err = Heap::open(&p, &huge).err().expect("refused");
    assert!(matches!(err, Error::Full { .. }), "{err:?}");
    assert!(!p.exists(), "the file this open made is removed");
    // A file that was there (empty) stays, empty.
    let q = d.file("empty.bin");
    std::fs::write(&q, b"").unwrap();
    let err = Heap::open(&q, &huge).err().expect("refused");
    assert!(matches!(err, Error::Full { .. }), "{err:?}");
    assert_eq!(std::fs::metadata(&q).unwrap().len(), 0);
    // The same path then makes a heap.
    let (h, created) = Heap::open(&p, &opts(1 << 20)).unwrap();
    assert!(created);
    drop(h);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
}
