//! Crash safety of catalog commits, with the commit stopped at each step as
//! if the process died there (a test-only fail point), then reopened.

mod heap_util;

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::{FailPoint, Heap};

fn names(h: &Heap) -> Vec<String> {
    h.list().into_iter().map(|e| e.name).collect()
}

/// Sets up "a" (committed), runs `op` with the fail point armed, reopens.
fn crash_during(point: FailPoint, op: impl FnOnce(&Heap) -> Result<(), Error>) -> (TempDir, Heap) {
    let d = TempDir::new("crash");
    let p = d.file("c.bin");
    let h = open(&p, 1 << 20);
    put_bytes(&h, "a", 1000, 1);
    put_bytes(&h, "b", 2000, 2);
    h.debug_fail_next_commit(point);
    assert!(op(&h).is_err(), "the simulated crash did not happen");
    // After the crash the handle refuses to go on.
    assert!(matches!(h.malloc(1), Err(Error::Closed { .. })));
    drop(h);
    let h = open(&p, 1 << 20);
    h.check_invariants().unwrap();
    (d, h)
}

fn used_after_reopen_with(entries: &[(&str, u64, u8)]) -> u64 {
    let d = TempDir::new("ref");
    let p = d.file("r.bin");
    let h = open(&p, 1 << 20);
    for &(n, len, fill) in entries {
        put_bytes(&h, n, len, fill);
    }
    drop(h);
    open(&p, 1 << 20).info().used_bytes
}

#[test]
fn crash_before_slot_keeps_the_old_catalog() {
    let old_used = used_after_reopen_with(&[("a", 1000, 1), ("b", 2000, 2)]);
    // put of a new name
    let (_d, h) = crash_during(FailPoint::BeforeSlot, |h| {
        let off = h.malloc(5000)?;
        h.put("c", b"meta", &[raw(off, 5000)], false)
    });
    assert_eq!(names(&h), ["a", "b"]);
    assert_eq!(get_bytes(&h, "a"), vec![1; 1000]);
    // The new catalog block, meta block and data block were reclaimed.
    assert_eq!(h.info().used_bytes, old_used);

    // overwrite
    let (_d, h) = crash_during(FailPoint::BeforeSlot, |h| {
        let off = h.malloc(10)?;
        write(h, off, &[9; 10]);
        h.put("a", b"", &[raw(off, 10)], true)
    });
    assert_eq!(get_bytes(&h, "a"), vec![1; 1000]);
    assert_eq!(h.info().used_bytes, old_used);

    // remove and rename
    let (_d, h) = crash_during(FailPoint::BeforeSlot, |h| h.remove("a"));
    assert_eq!(names(&h), ["a", "b"]);
    let (_d, h) = crash_during(FailPoint::BeforeSlot, |h| h.rename("a", "b", true));
    assert_eq!(names(&h), ["a", "b"]);
    assert_eq!(get_bytes(&h, "b"), vec![2; 2000]);
    assert_eq!(h.info().used_bytes, old_used);
}

#[test]
fn crash_after_slot_shows_the_new_catalog() {
    let (_d, h) = crash_during(FailPoint::AfterSlot, |h| {
        let off = h.malloc(5000)?;
        write(h, off, &[3; 5000]);
        h.put("c", b"meta", &[raw(off, 5000)], false)
    });
    assert_eq!(names(&h), ["a", "b", "c"]);
    assert_eq!(get_bytes(&h, "c"), vec![3; 5000]);
    assert_eq!(h.get("c").unwrap().meta, b"meta");
    // The old catalog block (not yet freed at the crash) was reclaimed.
    assert_eq!(
        h.info().used_bytes,
        used_after_reopen_with(&[("a", 1000, 1), ("b", 2000, 2), ("c", 5000, 3)])
    );

    let (_d, h) = crash_during(FailPoint::AfterSlot, |h| h.remove("a"));
    assert_eq!(names(&h), ["b"]);
    assert_eq!(
        h.info().used_bytes,
        used_after_reopen_with(&[("b", 2000, 2)])
    );

    let (_d, h) = crash_during(FailPoint::AfterSlot, |h| h.rename("a", "b", true));
    assert_eq!(names(&h), ["b"]);
    assert_eq!(get_bytes(&h, "b"), vec![1; 1000]);
    assert_eq!(
        h.info().used_bytes,
        used_after_reopen_with(&[("b", 1000, 1)])
    );
}

#[test]
fn a_torn_slot_write_falls_back_to_the_previous_generation() {
    use rfmalloc::format::{pick_slot, slot_offset, HEADER_SIZE};
    let d = TempDir::new("torn");
    let p = d.file("t.bin");
    {
        let h = open(&p, 1 << 20);
        put_bytes(&h, "a", 100, 1);
        h.debug_fail_next_commit(FailPoint::AfterSlot);
        let off = h.malloc(100).unwrap();
        let _ = h.put("b", b"", &[raw(off, 100)], false);
    }
    // Tear the slot just written (as a power cut in mid-sector would).
    let mut bytes = std::fs::read(&p).unwrap();
    let (i, _) = pick_slot(&bytes[..HEADER_SIZE as usize], bytes.len() as u64).unwrap();
    bytes[slot_offset(i) + 20] ^= 0xff;
    std::fs::write(&p, &bytes).unwrap();
    let h = open(&p, 1 << 20);
    assert_eq!(names(&h), ["a"]);
    assert_eq!(get_bytes(&h, "a"), vec![1; 100]);
    h.check_invariants().unwrap();
}
