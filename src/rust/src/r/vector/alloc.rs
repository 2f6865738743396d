//! Heap space for vectors: [`heap_malloc`] (which runs R's garbage
//! collector when vectors hold much heap memory R does not count),
//! [`returned`] (a collected vector gives its bytes back) and [`new_block`]
//! (a block filled before anyone sees it). The bottom of the vector layer:
//! every other `r::vector` module allocates through it.

use std::cell::Cell;

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::r::ffi::*;

/// The accounting of heap bytes against R's garbage collector.
///
/// R's GC runs when R's own heap (nodes and the vectors R mallocs) reaches
/// its trigger. Heap vectors are not in R's heap: an ALTREP vector's node
/// is a few hundred bytes of R memory and its elements are in the file; a
/// classic vector's node is allocated by our allocator, which R never
/// counts as used (and `r::vector::classic` keeps R from raising its
/// trigger for it, see "R's GC trigger" there). So `gc()` reports R's own
/// memory only, and the trigger keeps working for R's own garbage (the
/// temporaries of a fill loop) however large the heap vectors are.
///
/// The flip side: R does not see heap bytes, so a loop that creates and
/// drops fmalloc vectors could grow the file far before R collects them.
/// So we run R's garbage collector ourselves when the bytes allocated for
/// vectors and not yet returned (by collected vectors) grew by this much
/// since we last did.
const GC_EVERY: u64 = 1 << 30;

thread_local! {
    /// Net bytes allocated for vectors since our last GC (never below 0).
    static SINCE_GC: Cell<u64> = const { Cell::new(0) };
}

/// A collected vector returned `bytes` to its heap (called from finalizers
/// and from the classic allocator's `mem_free`, during GC: no R calls).
pub(crate) fn returned(bytes: u64) {
    SINCE_GC.with(|c| c.set(c.get().saturating_sub(bytes)));
}

fn run_gc() {
    SINCE_GC.with(|c| c.set(0));
    // SAFETY: R_gc() does not raise R errors (errors in finalizers are
    // caught by R); called on R's main thread with no lock held.
    unsafe { R_gc() };
}

/// `heap.malloc` for a vector: runs R's GC when [`GC_EVERY`] more bytes are
/// held by vectors than after the last run, and once more before giving up
/// when the heap is full, so that collected vectors return their blocks
/// first.
pub(crate) fn heap_malloc(heap: &Heap, bytes: u64) -> Result<u64, Error> {
    heap_alloc(heap, bytes, Heap::malloc)
}

/// [`heap_malloc`] of a block that reads as zeros (`Heap::malloc_zeroed`:
/// written only where it is recycled space, so a new vector in fresh file
/// space costs no page touch).
pub(crate) fn heap_malloc_zeroed(heap: &Heap, bytes: u64) -> Result<u64, Error> {
    heap_alloc(heap, bytes, Heap::malloc_zeroed)
}

fn heap_alloc(
    heap: &Heap,
    bytes: u64,
    malloc: fn(&Heap, u64) -> Result<u64, Error>,
) -> Result<u64, Error> {
    let since = SINCE_GC.with(|c| {
        let v = c.get().saturating_add(bytes);
        c.set(v);
        v
    });
    if since > GC_EVERY {
        run_gc();
    }
    match malloc(heap, bytes) {
        Err(Error::Full { .. }) => {
            run_gc();
            malloc(heap, bytes)
        }
        other => other,
    }
}

/// A new block for `n` fixed-size elements of `elem` (see [`new_block`]).
pub(crate) fn new_elements(
    heap: &Heap,
    elem: ElemType,
    n: u64,
    fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<BlockDesc, Error> {
    let bytes = n
        .checked_mul(elem.size())
        .ok_or_else(|| Error::Invalid("vector too long".into()))?;
    new_block(heap, elem, n, bytes, fill)
}

/// A new block of `bytes` bytes in `heap` holding `length` elements of
/// `elem` (for strings `length` is the pool size in bytes), its bytes
/// written by `fill` before anyone else can see them. If `fill` fails the
/// block is released and its error returned. The caller owns the block's
/// one reference.
pub(crate) fn new_block(
    heap: &Heap,
    elem: ElemType,
    length: u64,
    bytes: u64,
    fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<BlockDesc, Error> {
    let off = heap_malloc(heap, bytes)?;
    let filled = if bytes == 0 {
        fill(&mut [])
    } else {
        heap.ptr(off, bytes).and_then(|p| {
            // SAFETY: [p, p + bytes) is the block just allocated, mapped
            // while `heap` lives and not shared with anyone yet.
            let buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) };
            fill(buf)
        })
    };
    if let Err(e) = filled {
        let _ = heap.release(off);
        return Err(e);
    }
    Ok(BlockDesc {
        offset: off,
        data_offset: off,
        elem,
        length,
    })
}
