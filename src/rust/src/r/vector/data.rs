//! What an fmalloc ALTREP vector holds ([`VecData`], behind data1's
//! external pointer; see `r::vector::altrep` for the classes) and the
//! accessors every method uses: where the elements are now ([`cur`],
//! [`private_copy`]) and the data of an instance ([`vd`]).

use std::ptr;

use crate::heap::{BlockDesc, ElemType, Heap};
use crate::pool::Pool;
use crate::r::error::{guard, Failure};
use crate::r::ffi::*;

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

/// The [`VecData`] behind data1 of `x`, or `None` when data1 is not an
/// external pointer or was already cleared by the finalizer.
///
/// # Safety
/// `x` must be an ALTREP instance of one of the fmalloc classes.
pub(crate) unsafe fn data_of(x: SEXP) -> Option<*mut VecData> {
    // SAFETY: data1 of a valid ALTREP instance; type and address reads.
    let p = unsafe {
        let d1 = R_altrep_data1(x);
        if TYPEOF(d1) as SEXPTYPE != EXTPTRSXP {
            return None;
        }
        R_ExternalPtrAddr(d1) as *mut VecData
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
    // SAFETY: a non-null address is the Box<VecData> made by `new_altrep`,
    // alive until the finalizer clears it; R is single-threaded.
    unsafe { &mut *p }
}
