//! Making fmalloc vectors on either path ([`create`]) and recognising
//! them ([`locate`], [`block_of`]): the top of the vector layer, used by
//! named objects and the savvy functions.

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::r::ffi::*;
use crate::r::vector::alloc::{heap_malloc, heap_malloc_zeroed};
use crate::r::vector::altrep::{self, BlockRef};
use crate::r::vector::altstring::new_pool;
use crate::r::vector::classic;
use crate::r::vector::data::private_copy;

/// A new vector of `n` elements in `heap`. The classic path is used when
/// asked for and R would call the allocator; otherwise (and for lengths R
/// keeps to itself) the vector is ALTREP.
pub(crate) fn create(
    heap: &Heap,
    elem: ElemType,
    n: u64,
    classic: bool,
    init: bool,
) -> savvy::Result<SEXP> {
    if heap.is_readonly() {
        return Err(Error::ReadOnly {
            path: heap.path().to_path_buf(),
        }
        .into());
    }
    if classic && classic::r_uses_allocator(elem, n) {
        return classic::new_vector(heap, elem, n, init);
    }
    // ALTREP: the data in a block of their own, both nodes in R's heap
    // (never a node in the shared mapping: see `r::vector::altrep`).
    let desc = if elem == ElemType::String {
        new_pool(heap, n)?
    } else {
        let bytes = n
            .checked_mul(elem.size())
            .ok_or_else(|| Error::Invalid("vector too long".into()))?;
        // Zeros (logicals always: arbitrary bytes are not valid R
        // logicals) cost nothing in fresh file space (`heap_malloc_zeroed`).
        let off = if init || elem == ElemType::Logical {
            heap_malloc_zeroed(heap, bytes)?
        } else {
            heap_malloc(heap, bytes)?
        };
        BlockDesc {
            offset: off,
            data_offset: off,
            elem,
            length: n,
        }
    };
    altrep::new_altrep(heap, &desc, BlockRef::Adopt)
}

/// Where `x`'s data live, if in a heap: the heap, the block and whether it
/// is a classic vector. Materialised ALTREP vectors (private copies) and
/// classic character vectors (pointers into R's heap) are not nameable;
/// they report `None` from [`block_of`] but are still `is_fmalloc()`.
pub(crate) struct Located {
    pub heap: Heap,
    pub desc: BlockDesc,
    pub classic: bool,
    /// The data are a private copy or session-only pointers.
    pub private: bool,
    pub readonly: bool,
}

/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn locate(x: SEXP) -> Option<Located> {
    // SAFETY: x is valid; vec_data_of checks the class before reading data1.
    if let Some(d) = unsafe { altrep::vec_data_of(x) } {
        // SAFETY: a live VecData (not yet finalized: x is reachable).
        let d = unsafe { &*d };
        return Some(Located {
            heap: d.heap.clone(),
            desc: d.desc(),
            classic: false,
            // A writable character vector keeps its pool in step with its
            // expanded copy; otherwise a materialised vector is private.
            private: unsafe { private_copy(x) }.is_some()
                && (d.readonly || d.elem != ElemType::String),
            readonly: d.readonly,
        });
    }
    // SAFETY: x is valid.
    let (heap, desc, strings) = unsafe { classic::block_of(x) }?;
    let readonly = heap.is_readonly();
    Some(Located {
        heap,
        desc,
        classic: true,
        private: strings,
        readonly,
    })
}

/// The heap block holding `x`'s data, when `x` is an fmalloc vector (either
/// path) whose data are in the file: what naming it without a copy needs.
///
/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn block_of(x: SEXP) -> Option<(Heap, BlockDesc)> {
    // SAFETY: forwarded.
    let l = unsafe { locate(x) }?;
    (!l.private).then_some((l.heap, l.desc))
}
