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
//! So the block layout is (measured on R 4.2, long vectors included: their
//! 64-bit length fits R's ordinary header)
//!
//! | block offset | bytes | content                                  |
//! |--------------|-------|------------------------------------------|
//! | 0            | 32    | copy of our `R_allocator_t`              |
//! | 32           | 48    | R's vector header (process pointers)     |
//! | 80           | n * s | the elements                             |
//!
//! Nothing below depends on these sizes: the block is allocated in advance
//! with room to spare (a possible long-vector header included) and R's
//! request is checked against it; vectors are recognised by the allocator
//! copy at the block start, searched at most `MAX_HEADER` bytes before the
//! node.
//!
//! Recognising a classic vector (`is_fmalloc()`, naming its data): [`LIVE`]
//! lists the heaps with live classic vectors (a count each, no per-block
//! set, so creating one costs no map insert). A non-ALTREP vector whose node
//! lies inside one of their mappings was made by R through our allocator
//! (R puts no other node there); its block is the nearest start before it
//! that holds our allocator copy (our `mem_alloc` and `mem_free`), read only
//! after `Heap::ptr` proved those bytes mapped. The copy's `data` pointer
//! is never followed there: nothing proves where it points.
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
use std::sync::Mutex;

#[cfg(feature = "classic")]
use super::altrep::{protected, sexptype};
use super::ffi::*;
#[cfg(not(feature = "classic"))]
use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};

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
/// Upper bound of the distance from a block to the node R put in it.
const MAX_HEADER: u64 = 256;

/// The allocator's `data` while `Rf_allocVector3` runs.
struct Ctx<'a> {
    heap: &'a Heap,
    /// The block allocated in advance and the size it was asked for.
    pre: Option<(u64, u64)>,
}

/// The allocator's `data` in the copy stored in each block.
struct ClassicBlock {
    heap: Heap,
    block: u64,
    /// Bytes R asked for (returned to the GC trigger when freed).
    bytes: u64,
}

/// Heaps with live classic vectors and how many each has; `block_of` looks
/// for a vector's node in their mappings. A heap stays here (a clone) while
/// it has at least one live classic vector.
static LIVE: Mutex<Vec<(Heap, u64)>> = Mutex::new(Vec::new());

fn same_heap(a: &Heap, b: &Heap) -> bool {
    // Byte comparison of the canonical paths (a Path comparison would parse
    // components on every allocation).
    a.heap_id() == b.heap_id() && a.path().as_os_str() == b.path().as_os_str()
}

fn live_add(heap: &Heap) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    match live.iter_mut().find(|(h, _)| same_heap(h, heap)) {
        Some((_, count)) => *count += 1,
        None => live.push((heap.clone(), 1)),
    }
}

fn live_remove(heap: &Heap) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = live.iter().position(|(h, _)| same_heap(h, heap)) {
        live[i].1 -= 1;
        if live[i].1 == 0 {
            live.swap_remove(i);
        }
    }
}

/// Whether the block at `block` of `heap` starts with the allocator copy R
/// stores for a vector we allocated there (our two functions).
fn is_our_copy(heap: &Heap, block: u64) -> bool {
    let Ok(p) = heap.ptr(block, ALLOCATOR_COPY) else {
        return false;
    };
    // SAFETY: `Heap::ptr` proved [block, block + ALLOCATOR_COPY) mapped (it
    // stays mapped: `heap` is alive); plain words, read unaligned.
    let words = unsafe { ptr::read_unaligned(p.as_ptr() as *const [usize; 4]) };
    let ours = [
        mem_alloc as unsafe extern "C" fn(*mut R_allocator_t, usize) -> *mut c_void as usize,
        mem_free as unsafe extern "C" fn(*mut R_allocator_t, *mut c_void) as usize,
    ];
    // R_allocator_t: mem_alloc, mem_free, res, data.
    words[0] == ours[0] && words[1] == ours[1] && words[3] != 0
}

unsafe extern "C" fn mem_alloc(a: *mut R_allocator_t, size: usize) -> *mut c_void {
    let got = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: while Rf_allocVector3 runs, `data` is our stack Ctx
        // (`new_vector` keeps it alive and R calls us only from there).
        let ctx = unsafe { &mut *((*a).data as *mut Ctx) };
        let heap = ctx.heap;
        let size = size as u64;
        let off = match ctx.pre.take() {
            Some((off, cap)) if size <= cap => off,
            other => {
                if let Some((off, _)) = other {
                    let _ = heap.release(off);
                }
                heap.malloc(size).ok()?
            }
        };
        let p = match heap.ptr(off, size) {
            Ok(p) => p.as_ptr(),
            Err(_) => {
                let _ = heap.release(off);
                return None;
            }
        };
        live_add(heap);
        let owned = Box::into_raw(Box::new(ClassicBlock {
            heap: heap.clone(),
            block: off,
            bytes: size,
        }));
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
        let _ = owned.heap.release(owned.block);
        live_remove(&owned.heap);
        super::vector::returned(owned.bytes);
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

/// A new classic vector of `n` elements in `heap`; zero-filled (NA for
/// character) when `init`. Requires [`r_uses_allocator`].
#[cfg(feature = "classic")]
pub(crate) fn new_vector(heap: &Heap, elem: ElemType, n: u64, init: bool) -> savvy::Result<SEXP> {
    let elt = if elem == ElemType::String {
        8
    } else {
        elem.size()
    };
    let too_long = || savvy::Error::new("Rfmalloc: vector too long");
    let data = n.checked_mul(elt).ok_or_else(too_long)?;
    let header = ALLOCATOR_COPY + VEC_HEADER + if n > R_SHORT_LEN_MAX { LONG_HEADER } else { 0 };
    let want = data
        .checked_add(7)
        .map(|d| d & !7)
        .and_then(|d| d.checked_add(header))
        .ok_or_else(too_long)?;
    let pre = super::vector::heap_malloc(heap, want)?;
    let mut ctx = Ctx {
        heap,
        pre: Some((pre, want)),
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
    let made = unsafe { protected(|| Rf_allocVector3(ty, n as R_xlen_t, ap)) };
    if let Some((off, _)) = ctx.pre.take() {
        // R did not take the block (it failed before, or asked for more).
        let _ = heap.release(off);
    }
    let made = made?;
    // SAFETY: x is the new vector (n elements of `ty`); filling does not
    // allocate, so nothing needs protection.
    unsafe {
        let x = made;
        if elem == ElemType::String {
            if init {
                for i in 0..n as R_xlen_t {
                    SET_STRING_ELT(x, i, R_NaString);
                }
            }
        } else if init {
            ptr::write_bytes(data_ptr(x) as *mut u8, 0, data as usize);
        }
    }
    Ok(made)
}

/// The heap block of a classic vector made by [`new_vector`], if `x` is one:
/// its node lies in the mapping of a heap with live classic vectors, and
/// the block that starts at most [`MAX_HEADER`] bytes before it holds our
/// allocator copy (R's header sizes are not part of its API, so no exact
/// distance is assumed; R 4.2 puts the node right after the copy).
///
/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn block_of(x: SEXP) -> Option<(Heap, BlockDesc, bool)> {
    // SAFETY: header reads of a valid SEXP.
    let elem = unsafe {
        if ALTREP(x) != 0 {
            return None;
        }
        super::altrep::elem_of_sexptype(TYPEOF(x) as SEXPTYPE)?
    };
    let node = x as *const u8;
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for (heap, _) in live.iter() {
        let Some(at) = heap.offset_of(node) else {
            continue;
        };
        let nearest = at.checked_sub(ALLOCATOR_COPY)?;
        let farthest = at.saturating_sub(MAX_HEADER);
        // Blocks are 8-byte aligned.
        let block = (farthest..=nearest)
            .rev()
            .step_by(8)
            .find(|&b| is_our_copy(heap, b))?;
        // SAFETY: x is a live vector; its data follow its header.
        let data = unsafe { data_ptr(x) } as *const u8;
        let data_offset = heap.offset_of(data)?;
        // SAFETY: header read.
        let n = unsafe { XLENGTH(x) } as u64;
        let desc = BlockDesc {
            offset: block,
            data_offset,
            elem,
            length: n,
        };
        return Some((heap.clone(), desc, elem == ElemType::String));
    }
    None
}
