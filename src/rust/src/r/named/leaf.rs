//! Leaves of named objects: where a vector's data live, copying a vector
//! into a new heap block, and vectors over stored blocks. Built on the
//! vectors layer (`r::vector::create` finds the block of a vector of either path,
//! `r::vector::altrep` makes vectors over blocks).

use std::os::raw::c_void;

use savvy::Sexp;

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::r::error::protected;
use crate::r::ffi::*;
use crate::r::types::{char_elt, elem_of_sexptype};
use crate::r::vector::alloc::{new_block, new_elements};
use crate::r::vector::altrep::{new_altrep, BlockRef};
use crate::r::vector::create::block_of;
use crate::strpool;

/// The heap block holding `x`'s data when they live in `heap` as they are
/// (an fmalloc vector of either path, not replaced by a private copy);
/// `None` otherwise.
pub(crate) fn block_of_leaf(heap: &Heap, x: SEXP) -> Option<BlockDesc> {
    // SAFETY: x is a valid SEXP (an element of a list R passed in).
    let (owner, desc) = unsafe { block_of(x) }?;
    owner.same(heap).then_some(desc)
}

/// Copies `x` (an atomic vector of a supported type, length > 0) into a new
/// block of `heap`; returns an ALTREP vector over it (holding the block's
/// only reference) and the block.
pub(crate) fn copy_leaf_into_heap(heap: &Heap, x: Sexp) -> savvy::Result<(Sexp, BlockDesc)> {
    let x = x.0;
    // SAFETY: x is a valid SEXP.
    let elem = unsafe { elem_of_sexptype(TYPEOF(x) as SEXPTYPE) }
        .ok_or_else(|| Error::Invalid("internal: not a vector type that can be stored".into()))?;
    // SAFETY: x is a valid SEXP.
    let n = unsafe { XLENGTH(x) } as u64;
    let src = data_pointer(x, elem)?;
    let desc = if elem == ElemType::String {
        // SAFETY: `src` points at the n CHARSXPs of x (materialised above).
        let chars = unsafe { std::slice::from_raw_parts(src as *const SEXP, n as usize) };
        copy_strings(heap, chars)?
    } else {
        new_elements(heap, elem, n, |dst| {
            if !dst.is_empty() {
                // SAFETY: src holds the n elements of x (alive), dst.len() bytes;
                // dst is the fresh block.
                let src = unsafe { std::slice::from_raw_parts(src as *const u8, dst.len()) };
                crate::r::named::progress::copy(dst, src);
            }
            Ok(())
        })?
    };
    let vector = new_altrep(heap, &desc, BlockRef::Adopt)?;
    Ok((Sexp(vector), desc))
}

/// A read pointer to x's elements (CHARSXPs for strings). ALTREP vectors
/// may allocate to produce it, so that happens under unwind protection,
/// before this module owns any heap block.
pub(crate) fn data_pointer(x: SEXP, elem: ElemType) -> savvy::Result<*const c_void> {
    // SAFETY: DATAPTR_RO / STRING_PTR_RO on a valid vector of that type; an
    // R error longjmps into unwind protection, past no Rust-owned values.
    unsafe {
        protected(|| {
            if elem == ElemType::String {
                STRING_PTR_RO(x) as *const c_void
            } else {
                DATAPTR_RO(x)
            }
        })
    }
}

/// A new string-pool block holding `chars`.
fn copy_strings(heap: &Heap, chars: &[SEXP]) -> savvy::Result<BlockDesc> {
    let elts: Vec<strpool::Elt<'_>> = chars.iter().map(|&c| char_elt(c)).collect();
    let text: u64 = elts.iter().flatten().map(|(b, _)| b.len() as u64).sum();
    let n = elts.len() as u64;
    // Room for later writes of longer strings without moving the pool (a
    // named pool that grows moves to a new block, with a catalog commit).
    let cap = text.saturating_add((text / 4).max(256));
    let size = strpool::block_size(n, cap)
        .ok_or_else(|| Error::Invalid("character vector too long".into()))?;
    let desc = new_block(heap, ElemType::String, size, size, |buf| {
        let mut layout = strpool::init(buf, n).map_err(|e| Error::Invalid(e.to_string()))?;
        for (i, e) in elts.iter().enumerate() {
            if e.is_some() {
                strpool::set(buf, &mut layout, i as u64, *e)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
            }
        }
        Ok(())
    })?;
    Ok(desc)
}

/// A new ALTREP vector over a stored block (one more reference to it).
pub(crate) fn vector_over_block(heap: &Heap, desc: &BlockDesc) -> savvy::Result<Sexp> {
    Ok(Sexp(new_altrep(heap, desc, BlockRef::Retain)?))
}
