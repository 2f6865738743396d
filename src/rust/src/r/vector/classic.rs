//! The classic path: ordinary R vectors (not ALTREP) whose whole node —
//! R's header and the data — R allocates in the heap through
//! `Rf_allocVector3` and a custom `R_allocator_t`.
//!
//! How R uses the allocator (R 4.2 `src/main/memory.c`): `custom_node_alloc`
//! calls `mem_alloc(allocator, size + sizeof(R_allocator_t))`, then *copies
//! the allocator struct* into the first 32 bytes of the block and puts the
//! node after it. When the node is collected, the sweep calls
//! `mem_free(copy, copy)` with that copy. If `mem_alloc` returns NULL, R runs
//! a full GC, retries once, then raises "cannot allocate vector".
//!
//! **Forks.** R's node header lives in the shared file mapping, and a
//! forked child's garbage collector writes mark bits and GC links into
//! every node it reaches (design invariant 6 forbids sharing them). So
//! `mem_alloc` hands R a *page-aligned region* inside the block, rounded up
//! to whole pages: its pages hold this vector and nothing else (the block
//! is allocated with a page of slack for the alignment). The region is
//! registered with `map::fork`, whose `pthread_atfork` child handler maps
//! it again privately (`MAP_PRIVATE | MAP_FIXED`, same file, same bytes)
//! in every forked child: the child's GC, and any write the child makes to
//! a classic vector's elements, touch the child's private copies only; the
//! parent and the file never see them. (ALTREP vectors have both nodes in
//! R's own heap and their elements in a data-only block: a child's writes
//! to them reach the file, see `r::altrep`.) The price is at least two
//! pages of heap per classic vector; small vectors belong to ALTREP.
//!
//! So the layout is (measured on R 4.2, long vectors included: their
//! 64-bit length fits R's ordinary header)
//!
//! | offset                    | bytes | content                              |
//! |---------------------------|-------|--------------------------------------|
//! | block                     | < 1 page | alignment slack                   |
//! | region = page-aligned     | 32    | copy of our `R_allocator_t`          |
//! | region + 32               | 48    | R's vector header (process pointers) |
//! | region + 80               | n * s | the elements                         |
//! | ...                       |       | padding to the region's last page    |
//!
//! Nothing below depends on these sizes: the block is allocated in advance
//! with room to spare (a possible long-vector header included) and R's
//! request is checked against it.
//!
//! Recognising a classic vector (`is_fmalloc()`, naming its data): the
//! `map::fork` registry holds every live region, tagged with the address of
//! its [`ClassicBlock`] (the heap and the block offset). A non-ALTREP
//! vector whose node lies inside a registered region was made by R through
//! our allocator (R puts no other node there). The region is unregistered
//! in `mem_free` before its `ClassicBlock` is dropped, so a tag found there
//! always points to a live one.
//!
//! The header holds process pointers, so classic vectors are session-scoped
//! (their *data* can be named and reconnected as ALTREP later). For
//! character vectors the elements are CHARSXP pointers into R's own heap:
//! such vectors live in the file but mean nothing outside this session.
//!
//! Ownership: `data` of the allocator we pass points to a stack [`Ctx`].
//! The block is allocated *before* calling R (so a full heap is a classed
//! Rfmalloc error, not R's "cannot allocate vector"), and `mem_alloc` hands
//! it out. R copies the struct only after `mem_alloc` returns, so
//! `mem_alloc` replaces `data` with a boxed [`ClassicBlock`] (a heap clone
//! plus the block offset): each vector owns one heap reference, reclaimed in
//! `mem_free`, which releases the block. Everything R may longjmp out of
//! runs under savvy's unwind protection; a block R did not take is released.
//!
//! R does not use the allocator for length 0 (any type) or for length 1
//! logical/integer/double; `vector::create` sends those to ALTREP.
//!
//! **R's GC trigger.** R 4.2 never counts a custom-allocated vector as
//! used memory (`R_LargeVallocSize` is for the vectors R mallocs itself;
//! `gc()`'s "used" leaves ours out, which is honest: its bytes are in the
//! file, not in R's heap). But *before* allocating, `Rf_allocVector3`
//! checks that the vector would fit under R's trigger (`R_VSize`) and, when
//! it would not, runs a collection that raises the trigger by the
//! vector's size plus 20 %. Nothing ever fills that room, so R's own
//! garbage (the index and value vectors of a chunked fill) piled up to
//! that size before R collected again (the trigger then shrinks by a fifth
//! per collection): a 4 GB vector let ~2 GB of anonymous memory pile up,
//! a 32 GB one 16 GB. So R is asked for the shortest vector it sends to
//! the allocator (length 1, or 2 for logical/integer/double: nothing
//! to make room for), the block holds the whole vector, and the length is
//! set to `n` with `SETLENGTH` before anyone sees the vector (R frees a
//! custom node through `mem_free` whatever its length, and reads no size
//! from it). Heap bytes are accounted for by `vector::heap_malloc`'s
//! `GC_EVERY` instead, like ALTREP vectors. R >= 4.5 counts `SETLENGTH`
//! outside its API (4.6 no longer exports it), so only builds for older R
//! (cargo feature `r-pre-4-5`, set by `configure`) do this; the others ask R
//! for the real length: there a big classic vector still raises R's trigger
//! (a known limit; ALTREP vectors do not).
//!
//! `Rf_allocVector3` is not part of R's API ("Writing R Extensions" lists it
//! among the non-API entry points; `R CMD check` on R >= 4.5 says so), and no
//! API function lets a package choose where R puts a vector's node. A build
//! made with `RFMALLOC_CLASSIC=false` (cargo feature `classic` off) leaves
//! the call out: [`AVAILABLE`] is false, `new_vector` refuses with
//! `fmalloc_unsupported`, and everything that recognises classic vectors
//! simply never finds one.
#![cfg_attr(not(feature = "classic"), allow(dead_code))]

use std::os::raw::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::map::fork;
#[cfg(feature = "classic")]
use crate::r::error::{invalid, protected};
use crate::r::ffi::*;
#[cfg(feature = "classic")]
use crate::r::types::sexptype;
use crate::r::vector::alloc::returned;
#[cfg(feature = "classic")]
use crate::r::vector::alloc::{heap_malloc, heap_malloc_zeroed};

/// Whether this build has the classic path.
pub(crate) const AVAILABLE: bool = cfg!(feature = "classic");

/// `sizeof(R_allocator_t)`.
const ALLOCATOR_COPY: u64 = std::mem::size_of::<R_allocator_t>() as u64;
/// `sizeof(SEXPREC_ALIGN)` on 64-bit R: sxpinfo + 3 pointers + length +
/// truelength. Only used to size the block allocated in advance; if R asks
/// for more, `mem_alloc` allocates a fitting block itself.
const VEC_HEADER: u64 = 48;
/// `sizeof(R_long_vec_hdr_t)`, spare room for R versions that put it in
/// front of long vectors.
const LONG_HEADER: u64 = 16;
const R_SHORT_LEN_MAX: u64 = i32::MAX as u64;

/// The allocator's `data` while `Rf_allocVector3` runs.
struct Ctx<'a> {
    heap: &'a Heap,
    /// The block allocated in advance and the size it was asked for.
    pre: Option<(u64, u64)>,
    /// Why `mem_alloc` returned NULL, if it did: `new_vector` reports it
    /// instead of R's unclassed "cannot allocate vector".
    failed: Option<Error>,
    /// Bytes of the node (allocator copy, header, data) at the vector's
    /// real length: R may be asked for a shorter vector (see "R's GC
    /// trigger").
    full: u64,
    /// The block R got reads as zeros (`Heap::malloc_zeroed`).
    zeroed: bool,
}

/// The allocator's `data` in the copy stored in each block.
struct ClassicBlock {
    heap: Heap,
    block: u64,
    /// Bytes R asked for (returned to the GC trigger when freed).
    bytes: u64,
    /// Address of the page-aligned region R's node is in (the key of its
    /// `map::fork` registration).
    region: usize,
}

fn page() -> u64 {
    fork::page_size() as u64
}

/// `n` rounded up to whole pages.
fn round_to_page(n: u64) -> Option<u64> {
    let p = page();
    n.checked_add(p - 1).map(|v| v / p * p)
}

/// Bytes of a block whose page-aligned region holds `size` bytes: the
/// region, and one page of slack for the alignment.
fn block_for(size: u64) -> Option<u64> {
    round_to_page(size)?.checked_add(page())
}

unsafe extern "C" fn mem_alloc(a: *mut R_allocator_t, size: usize) -> *mut c_void {
    let got = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: while Rf_allocVector3 runs, `data` is our stack Ctx
        // (`new_vector` keeps it alive and R calls us only from there).
        let ctx = unsafe { &mut *((*a).data as *mut Ctx) };
        let heap = ctx.heap;
        // R asks for the node at the short length; the region holds the
        // node at the real length.
        let size = (size as u64).max(ctx.full);
        let want = block_for(size)?;
        let off = match ctx.pre.take() {
            Some((off, cap)) if want <= cap => off,
            other => {
                if let Some((off, _)) = other {
                    let _ = heap.release(off);
                }
                ctx.zeroed = false;
                match heap.malloc(want) {
                    Ok(off) => off,
                    Err(e) => {
                        ctx.failed = Some(e);
                        return None;
                    }
                }
            }
        };
        // The page-aligned region inside the block (see the module docs).
        let placed = round_to_page(off)
            .zip(round_to_page(size))
            .ok_or_else(|| Error::Invalid("vector too long".into()))
            .and_then(|(region, len)| {
                let range = heap.cow_range(region, len)?;
                Ok((range, heap.ptr(region, len)?.as_ptr()))
            });
        let (range, p) = match placed {
            Ok(placed) => placed,
            Err(e) => {
                let _ = heap.release(off);
                ctx.failed = Some(e);
                return None;
            }
        };
        let owned = Box::into_raw(Box::new(ClassicBlock {
            heap: heap.clone(),
            block: off,
            bytes: size,
            region: range.addr,
        }));
        fork::register(range, owned as usize);
        // SAFETY: R copies *a into the block after we return, so the copy
        // carries the owned pointer.
        unsafe { (*a).data = owned as *mut c_void };
        Some(p as *mut c_void)
    }));
    got.ok().flatten().unwrap_or(ptr::null_mut())
}

unsafe extern "C" fn mem_free(a: *mut R_allocator_t, _block: *mut c_void) {
    // SAFETY: `a` is the copy R stored in the block; its `data` is the
    // ClassicBlock boxed by mem_alloc, reclaimed exactly once here (R frees
    // each node once). Called during GC: no R API calls below.
    let owned = unsafe { Box::from_raw((*a).data as *mut ClassicBlock) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        // Unregistered first: a registered tag always points to a live box.
        fork::unregister(owned.region);
        let _ = owned.heap.release(owned.block);
        returned(owned.bytes);
        drop(owned);
    }));
}

/// Whether R sends a request of this type and length to a custom allocator.
pub(crate) fn r_uses_allocator(elem: ElemType, n: u64) -> bool {
    match n {
        0 => false,
        1 => !matches!(
            elem,
            ElemType::Logical | ElemType::Integer | ElemType::Double
        ),
        _ => true,
    }
}

/// In a build without the classic path: the error that says so.
#[cfg(not(feature = "classic"))]
pub(crate) fn new_vector(
    _heap: &Heap,
    _elem: ElemType,
    _n: u64,
    _init: bool,
) -> savvy::Result<SEXP> {
    Err(Error::Unsupported(
        "this build of Rfmalloc has no classic path (it was installed with \
         RFMALLOC_CLASSIC=false); use method = \"altrep\""
            .into(),
    )
    .into())
}

/// A new classic vector of `n` elements in `heap`; zero-filled when `init`
/// (logicals always); character vectors are always NA. Requires [`r_uses_allocator`].
#[cfg(feature = "classic")]
pub(crate) fn new_vector(heap: &Heap, elem: ElemType, n: u64, init: bool) -> savvy::Result<SEXP> {
    let elt = if elem == ElemType::String {
        8
    } else {
        elem.size()
    };
    let too_long = || invalid("vector too long");
    let data = n.checked_mul(elt).ok_or_else(too_long)?;
    let full = data
        .checked_add(7)
        .map(|d| d & !7)
        .and_then(|d| d.checked_add(ALLOCATOR_COPY + VEC_HEADER))
        .ok_or_else(too_long)?;
    let long = if n > R_SHORT_LEN_MAX { LONG_HEADER } else { 0 };
    let want = full
        .checked_add(long)
        .and_then(block_for)
        .ok_or_else(too_long)?;
    // The length R is asked for (see "R's GC trigger" above): the shortest
    // it sends to a custom allocator (`r_uses_allocator`), set to `n` after.
    // R >= 4.5 counts `SETLENGTH` outside its API: there R gets `n`.
    #[cfg(feature = "r-pre-4-5")]
    let short: u64 = match elem {
        ElemType::Logical | ElemType::Integer | ElemType::Double => 2,
        _ => 1,
    };
    #[cfg(not(feature = "r-pre-4-5"))]
    let short: u64 = n;
    debug_assert!(n >= short && r_uses_allocator(elem, short));
    // Zeros come free where the block is fresh file space; logicals are
    // always zeroed (arbitrary bytes are not valid R logicals).
    let zeroed = (init || elem == ElemType::Logical) && elem != ElemType::String;
    let pre = if zeroed {
        heap_malloc_zeroed(heap, want)?
    } else {
        heap_malloc(heap, want)?
    };
    let mut ctx = Ctx {
        heap,
        pre: Some((pre, want)),
        failed: None,
        full,
        zeroed,
    };
    let mut alloc = R_allocator_t {
        mem_alloc: Some(mem_alloc),
        mem_free: Some(mem_free),
        res: ptr::null_mut(),
        data: &mut ctx as *mut Ctx as *mut c_void,
    };
    let ap = &mut alloc as *mut R_allocator_t;
    let ty = sexptype(elem);
    // SAFETY: Rf_allocVector3 with a valid allocator that outlives the call;
    // an R error longjmps into unwind_protect, then we clean up below.
    let made = unsafe { protected(|| Rf_allocVector3(ty, short as R_xlen_t, ap)) };
    if let Some((off, _)) = ctx.pre.take() {
        // R did not take the block (it failed before, or asked for more).
        let _ = heap.release(off);
    }
    // R's own error when `mem_alloc` gave it nothing: ours says why.
    if let (Err(_), Some(e)) = (&made, ctx.failed.take()) {
        return Err(e.into());
    }
    let made = made?;
    // SAFETY: x is the new vector of `short` elements of `ty` whose node
    // sits in a region with room for `n` elements (`mem_alloc` sized it
    // from `ctx.full`); it becomes `n` elements long before anything can
    // see it or run a GC (nothing below allocates). Character elements are
    // pointers R's GC follows: all `n` are set before anything else runs
    // (first to NULL, so that `SET_STRING_ELT`'s reference counting sees
    // no old value; R's allocVector3 sets them to "" the same way).
    unsafe {
        let x = made;
        #[cfg(feature = "r-pre-4-5")]
        SETLENGTH(x, n as R_xlen_t);
        if elem == ElemType::String {
            ptr::write_bytes(data_ptr(x) as *mut u8, 0, data as usize);
            // Always NA: character vectors start as NA whatever the method
            // and `init`.
            for i in 0..n as R_xlen_t {
                SET_STRING_ELT(x, i, R_NaString);
            }
        } else if !ctx.zeroed {
            ptr::write_bytes(data_ptr(x) as *mut u8, 0, data as usize);
        }
    }
    Ok(made)
}

/// The heap block of a classic vector made by [`new_vector`], if `x` is one:
/// its node lies in a region registered by `mem_alloc` (see the module
/// docs).
///
/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn block_of(x: SEXP) -> Option<(Heap, BlockDesc, bool)> {
    // SAFETY: header reads of a valid SEXP.
    let elem = unsafe {
        if ALTREP(x) != 0 {
            return None;
        }
        crate::r::types::elem_of_sexptype(TYPEOF(x) as SEXPTYPE)?
    };
    let (_, tag) = fork::find(x as usize)?;
    // SAFETY: a registered tag is the live ClassicBlock of that region
    // (`mem_free` unregisters before dropping it); R is single-threaded.
    let owned = unsafe { &*(tag as *const ClassicBlock) };
    let heap = &owned.heap;
    // SAFETY: x is a live vector; its data follow its header.
    let data = unsafe { data_ptr(x) } as *const u8;
    let data_offset = heap.offset_of(data)?;
    // SAFETY: header read.
    let n = unsafe { XLENGTH(x) } as u64;
    let desc = BlockDesc {
        offset: owned.block,
        data_offset,
        elem,
        length: n,
    };
    Some((heap.clone(), desc, elem == ElemType::String))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r_allocator_routing() {
        assert!(!r_uses_allocator(ElemType::Double, 0));
        assert!(!r_uses_allocator(ElemType::Integer, 1));
        assert!(!r_uses_allocator(ElemType::Logical, 1));
        assert!(r_uses_allocator(ElemType::Raw, 1));
        assert!(r_uses_allocator(ElemType::Complex, 1));
        assert!(r_uses_allocator(ElemType::String, 1));
        assert!(r_uses_allocator(ElemType::Double, 2));
    }
}
