//! Leaves of named objects: where a vector's data live, copying a vector
//! into a new heap block, and vectors over stored blocks. Built on the
//! vectors layer (`r::vector` finds the block of a vector of either path,
//! `r::altrep` makes vectors over blocks).

use std::cell::Cell;
use std::os::raw::c_void;

use savvy::unwind_protect::unwind_protect;
use savvy::Sexp;

use super::altrep::{elem_of_sexptype, new_altrep, BlockRef};
use super::ffi::*;
use super::vector::{block_of, new_block};
use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::strpool;

/// Whether two handles are the same open heap.
fn same_heap(a: &Heap, b: &Heap) -> bool {
    a.heap_id() == b.heap_id() && a.path() == b.path()
}

/// The heap block holding `x`'s data when they live in `heap` as they are
/// (an fmalloc vector of either path, not replaced by a private copy);
/// `None` otherwise.
pub(crate) fn block_of_leaf(heap: &Heap, x: SEXP) -> Option<BlockDesc> {
    // SAFETY: x is a valid SEXP (an element of a list R passed in).
    let (owner, desc) = unsafe { block_of(x) }?;
    same_heap(&owner, heap).then_some(desc)
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
        let bytes = n
            .checked_mul(elem.size())
            .ok_or_else(|| Error::Invalid("vector too long".into()))?;
        new_block(heap, elem, n, bytes, |dst| {
            if !dst.is_empty() {
                // SAFETY: src holds `bytes` bytes of x's data (x is alive);
                // dst is the fresh block, exactly `bytes` long.
                let src = unsafe { std::slice::from_raw_parts(src as *const u8, dst.len()) };
                super::progress::copy(dst, src);
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
fn data_pointer(x: SEXP, elem: ElemType) -> savvy::Result<*const c_void> {
    let out: Cell<*const c_void> = Cell::new(std::ptr::null());
    let out_ref = &out;
    // SAFETY: DATAPTR_RO / STRING_PTR_RO on a valid vector of that type; an
    // R error longjmps into unwind_protect, past no Rust-owned values.
    unsafe {
        unwind_protect(|| {
            let p = if elem == ElemType::String {
                STRING_PTR_RO(x) as *const c_void
            } else {
                DATAPTR_RO(x)
            };
            out_ref.set(p);
            R_NilValue
        })?;
    }
    Ok(out.get())
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

/// A CHARSXP as a pool element: bytes and encoding, `None` for NA.
pub(crate) fn char_elt<'a>(c: SEXP) -> strpool::Elt<'a> {
    // SAFETY: c is a CHARSXP of a live vector; R_CHAR/LENGTH/Rf_getCharCE
    // only read it and never allocate or raise errors.
    unsafe {
        if c == R_NaString {
            return None;
        }
        let len = LENGTH(c).max(0) as usize;
        let bytes = std::slice::from_raw_parts(R_CHAR(c) as *const u8, len);
        let enc = match Rf_getCharCE(c) {
            CE_UTF8 => strpool::Encoding::Utf8,
            CE_LATIN1 => strpool::Encoding::Latin1,
            CE_BYTES => strpool::Encoding::Bytes,
            _ => strpool::Encoding::Native,
        };
        Some((bytes, enc))
    }
}

/// A new ALTREP vector over a stored block (one more reference to it).
pub(crate) fn vector_over_block(heap: &Heap, desc: &BlockDesc) -> savvy::Result<Sexp> {
    Ok(Sexp(new_altrep(heap, desc, BlockRef::Retain)?))
}
