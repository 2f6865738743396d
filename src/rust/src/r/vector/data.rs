//! What an fmalloc ALTREP vector holds ([`VecData`], owned by data1, see
//! [`new_instance`]; `r::vector::altrep` has the classes) and the
//! accessors every method uses: where the elements are now ([`cur`],
//! [`private_copy`]) and the data of an instance ([`vd`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use crate::heap::{BlockDesc, ElemType, Heap};
use crate::pool::Pool;
use crate::r::error::{guard, Failure};
use crate::r::ffi::*;
use crate::r::vector::alloc::returned;

/// Where a vector's elements live in the heap.
pub(crate) enum Store {
    /// Fixed-size elements in a block this vector holds one reference to.
    Block {
        /// Payload offset of the block.
        block: u64,
        /// File offset of element 0.
        data_off: u64,
        /// Address of element 0 in the mapping (mapped memory never moves).
        mapped: *mut u8,
    },
    /// A string pool, shared by every vector over it (the pool holds the
    /// block reference).
    Pool(Pool),
}

/// What data1's external pointer points to.
pub(crate) struct VecData {
    pub(crate) heap: Heap,
    pub(crate) store: Store,
    /// Number of elements.
    pub(crate) len: u64,
    pub(crate) elem: ElemType,
    pub(crate) readonly: bool,
    /// The pool generation data2's expanded strings were read at (strings
    /// of a writable heap only).
    pub(crate) seen: u64,
    /// Bytes this vector returns to the GC trigger when collected (those of
    /// a block it adopted; 0 for a retained, shared block).
    pub(crate) counted: u64,
    /// Serialize as a reference to the named block (`fmalloc_ref()`), not
    /// by value; see `r::vector::serialize`.
    pub(crate) by_reference: bool,
}

impl VecData {
    /// The heap block as the catalog describes it (now: a pool may move).
    pub(crate) fn desc(&self) -> BlockDesc {
        match &self.store {
            Store::Block {
                block, data_off, ..
            } => BlockDesc {
                offset: *block,
                data_offset: *data_off,
                elem: self.elem,
                length: self.len,
            },
            Store::Pool(p) => p.desc(),
        }
    }

    /// Address of element 0 in the mapping (null for a string pool, whose
    /// elements are not an array).
    #[inline]
    pub(crate) fn mapped(&self) -> *mut u8 {
        match &self.store {
            Store::Block { mapped, .. } => *mapped,
            Store::Pool(_) => ptr::null_mut(),
        }
    }

    /// The string pool of a character vector.
    pub(crate) fn pool(&self) -> Option<&Pool> {
        match &self.store {
            Store::Pool(p) => Some(p),
            Store::Block { .. } => None,
        }
    }

    /// Gives up this vector's hold on its block (a pool's hold goes with
    /// the last vector over it).
    pub(crate) fn release_block(&self) {
        if let Store::Block { block, .. } = &self.store {
            let _ = self.heap.release(*block);
        }
    }
}

/// data2: the ordinary vector that replaced the mapping for `x`, if any.
///
/// # Safety
/// `x` must be an instance of one of the fmalloc classes.
#[inline]
pub(crate) unsafe fn private_copy(x: SEXP) -> Option<SEXP> {
    // SAFETY: reading data2 of a valid ALTREP instance.
    let d2 = unsafe { R_altrep_data2(x) };
    // SAFETY: comparing with R's nil constant.
    (d2 != unsafe { R_NilValue }).then_some(d2)
}

/// Where `x`'s elements are read and written now: data2's data when a
/// private copy replaced the mapping, the mapping otherwise. Derived on
/// every call (see the module docs).
///
/// # Safety
/// `x` must be an instance with an external-pointer data1 and `d` its data.
#[inline]
pub(crate) unsafe fn cur(x: SEXP, d: &VecData) -> *mut u8 {
    // SAFETY: data2, when set, is an ordinary vector of x's type.
    match unsafe { private_copy(x) } {
        Some(copy) => unsafe { data_ptr(copy) as *mut u8 },
        None => d.mapped(),
    }
}

/// The [`VecData`] behind data1 of `x`, or `None` when data1 holds none
/// (an external pointer the finalizer already cleared).
///
/// # Safety
/// `x` must be an ALTREP instance of one of the fmalloc classes.
pub(crate) unsafe fn data_of(x: SEXP) -> Option<*mut VecData> {
    // SAFETY: data1 of a valid ALTREP instance; type, length and address
    // reads.
    let p = unsafe {
        let d1 = R_altrep_data1(x);
        match TYPEOF(d1) as SEXPTYPE {
            EXTPTRSXP => R_ExternalPtrAddr(d1) as *mut VecData,
            RAWSXP if XLENGTH(d1) as usize == OWNER_BYTES => {
                ptr::read_unaligned(RAW(d1) as *const *mut VecData)
            }
            _ => ptr::null_mut(),
        }
    };
    (!p.is_null()).then_some(p)
}

/// The [`VecData`] of an instance of one of our classes (R only calls our
/// methods on those). Raises an R error if it was already finalized.
///
/// # Safety
/// `x` must be an instance of one of the fmalloc classes.
pub(crate) unsafe fn vd<'a>(x: SEXP) -> &'a mut VecData {
    // SAFETY: callers reach here only for instances of our classes.
    let Some(p) = (unsafe { data_of(x) }) else {
        return guard(|| Err(Failure::internal("a vector whose heap data were released")));
    };
    // SAFETY: a non-null address is the Box<VecData> made by
    // `new_instance`, alive until R collects the instance's data1 (which
    // it does only with the instance); R is single-threaded.
    unsafe { &mut *p }
}

// ---------------------------------------------------------------------------
// data1: the R node that owns an instance's VecData
// ---------------------------------------------------------------------------

/// A new ALTREP instance of `cls` whose data1 owns `data`: when R collects
/// the instance, `data` is dropped, which releases the vector's block and
/// its heap clone (and gives its bytes back to `alloc::returned`).
///
/// With the classic path's `Rf_allocVector3` (cargo feature `classic`),
/// data1 is an *owner*: a raw vector of one pointer (to the boxed data)
/// whose node R allocates through a custom allocator over process memory
/// (`malloc`, never the file: a forked child's GC writes into its own
/// copy). R calls the allocator's `mem_free` when its sweep frees the node,
/// and that call drops the data. So a vector costs R two small nodes and no
/// finalizer. A finalizer is a weak reference: R allocates two more
/// vectors for it, walks the list of all of them at every collection, and
/// runs each in a top-level context of its own; for many small vectors that
/// was most of their cost (issue 7: creating and collecting 200 000 of
/// them cost 2.5-3.5x `double(k)`). The node's payload is one pointer, so
/// what `gc()` reports barely changes.
///
/// Without `Rf_allocVector3` (a build with `RFMALLOC_CLASSIC=false`) data1
/// is an external pointer with a C finalizer, doing the same.
///
/// On an error the data are dropped (here, or by R's next collection when
/// the owner node was made).
pub(crate) fn new_instance(cls: R_altrep_class_t, data: VecData) -> savvy::Result<SEXP> {
    let raw = Box::into_raw(Box::new(data));
    // SAFETY: see `owner::attach`.
    let (made, taken) = unsafe { owner::attach(cls, raw) };
    if made.is_err() && !taken {
        // SAFETY: no owner node took `raw`; it came from Box::into_raw
        // above and is reclaimed once.
        dispose(unsafe { Box::from_raw(raw) });
    }
    made
}

/// Bytes of an owner node's payload: one pointer.
const OWNER_BYTES: usize = std::mem::size_of::<*mut VecData>();

/// Drops a collected vector's data: releases its block, returns its bytes
/// and drops its heap clone. Runs during R's garbage collection: no R
/// calls, and no panic leaves it.
fn dispose(data: Box<VecData>) {
    let _ = catch_unwind(AssertUnwindSafe(move || {
        data.release_block();
        returned(data.counted);
        drop(data);
    }));
}

#[cfg(feature = "classic")]
mod owner {
    use std::os::raw::c_void;
    use std::ptr;

    use super::{dispose, VecData, OWNER_BYTES};
    use crate::r::error::protected;
    use crate::r::ffi::*;

    /// The allocator passed to `Rf_allocVector3`, and whether its
    /// `mem_alloc` made the node (which then owns the data, whatever fails
    /// afterwards). R calls `mem_alloc` with the pointer it was given and
    /// copies only the leading `R_allocator_t`.
    #[repr(C)]
    struct OwnerAllocator {
        allocator: R_allocator_t,
        taken: bool,
    }

    /// `mem_alloc` of owner nodes: process memory.
    unsafe extern "C" fn mem_alloc(a: *mut R_allocator_t, size: usize) -> *mut c_void {
        // SAFETY: plain malloc; R checks the result for NULL.
        let p = unsafe { libc::malloc(size) };
        // SAFETY: `a` is the OwnerAllocator `attach` passed to R (R calls
        // mem_alloc with the allocator it was given, not a copy).
        unsafe { (*(a as *mut OwnerAllocator)).taken = !p.is_null() };
        p
    }

    /// `mem_free` of owner nodes, called by R's sweep with `a` = `p` = the
    /// block `mem_alloc` returned, which starts with R's copy of the
    /// allocator (its `data`: the boxed data).
    unsafe extern "C" fn mem_free(a: *mut R_allocator_t, p: *mut c_void) {
        // SAFETY: `a` is R's copy of our allocator inside the block; read
        // before the block is freed. `data` came from Box::into_raw in
        // `new_instance` and only this node's collection reclaims it.
        unsafe {
            let data = (*a).data as *mut VecData;
            libc::free(p);
            if !data.is_null() {
                dispose(Box::from_raw(data));
            }
        }
    }

    /// Makes the owner node of `raw` and the instance; also says whether
    /// the owner node was made (and so owns `raw`).
    ///
    /// # Safety
    /// `raw` is a `Box<VecData>` pointer not owned by anything else; on R's
    /// main thread.
    pub(super) unsafe fn attach(
        cls: R_altrep_class_t,
        raw: *mut VecData,
    ) -> (savvy::Result<SEXP>, bool) {
        let mut owner = OwnerAllocator {
            allocator: R_allocator_t {
                mem_alloc: Some(mem_alloc),
                mem_free: Some(mem_free),
                res: ptr::null_mut(),
                data: raw as *mut c_void,
            },
            taken: false,
        };
        let a = &mut owner as *mut OwnerAllocator as *mut R_allocator_t;
        // SAFETY: R allocations under unwind protection (an R error
        // longjmps back into it, not across Rust frames owning values); R
        // copies `*a` while Rf_allocVector3 runs, and `owner` outlives the
        // call. A raw vector of OWNER_BYTES (> 1) elements is always
        // allocated through the allocator. Writing the pointer into the
        // fresh node's payload does not allocate.
        let made = unsafe {
            protected(|| {
                let node = Rf_protect(Rf_allocVector3(RAWSXP, OWNER_BYTES as R_xlen_t, a));
                ptr::write_unaligned(RAW(node) as *mut *mut VecData, raw);
                let x = R_new_altrep(cls, node, R_NilValue);
                Rf_unprotect(1);
                x
            })
        };
        (made, owner.taken)
    }
}

#[cfg(not(feature = "classic"))]
mod owner {
    use std::os::raw::c_void;
    use std::ptr;

    use super::{dispose, VecData};
    use crate::r::error::protected;
    use crate::r::ffi::*;

    /// data1's finalizer.
    unsafe extern "C" fn finalize(ext: SEXP) {
        // SAFETY: ext is the external pointer made by `attach`.
        let p = unsafe { R_ExternalPtrAddr(ext) } as *mut VecData;
        if p.is_null() {
            return;
        }
        // SAFETY: clearing first makes a second call a no-op; p came from
        // Box::into_raw in `new_instance` and is reclaimed once here.
        unsafe { R_ClearExternalPtr(ext) };
        dispose(unsafe { Box::from_raw(p) });
    }

    /// Makes the external pointer (with a null address and its finalizer
    /// registered) and the instance, then attaches `raw`. The pointer is
    /// attached only after every R allocation succeeded, so on an error
    /// `raw` stays with the caller (`false`).
    ///
    /// # Safety
    /// `raw` is a `Box<VecData>` pointer not owned by anything else; on R's
    /// main thread.
    pub(super) unsafe fn attach(
        cls: R_altrep_class_t,
        raw: *mut VecData,
    ) -> (savvy::Result<SEXP>, bool) {
        // SAFETY: plain R allocations under unwind protection.
        let made = unsafe {
            protected(|| {
                let ext = Rf_protect(R_MakeExternalPtr(ptr::null_mut(), R_NilValue, R_NilValue));
                R_RegisterCFinalizerEx(ext, Some(finalize), FALSE);
                let x = R_new_altrep(cls, ext, R_NilValue);
                Rf_unprotect(1);
                x
            })
        };
        if let Ok(x) = made {
            // SAFETY: x is the fresh instance (not yet visible to R code, so
            // no GC can run before we return it); setting the address does
            // not allocate.
            unsafe { R_SetExternalPtrAddr(R_altrep_data1(x), raw as *mut c_void) };
        }
        (made, false)
    }
}
