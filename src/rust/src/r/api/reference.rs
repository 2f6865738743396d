//! The savvy functions behind serializing named vectors by reference
//! (`fmalloc_ref()` and `.fm_reconnect()` in R/serialize.R; the reference
//! itself is `r::vector::serialize`).

use savvy::{savvy, Sexp};

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType};
use crate::r::args::{u64_from_f64, FmallocHeap};
use crate::r::ffi::*;
use crate::r::named::leaf::vector_over_block;
use crate::r::vector::altrep::vec_data_of;
use crate::r::vector::serialize::{block_owner, in_file};

/// A vector over the block described by a reference (serializing by value,
/// as every vector does unless asked otherwise); `NULL` when the object
/// `name` of `heap` has not exactly this block any more.
/// @noRd
#[savvy]
fn fmalloc_named_block_vector(
    heap: &FmallocHeap,
    block: f64,
    data_offset: f64,
    elem: i32,
    length: f64,
    name: &str,
) -> savvy::Result<Sexp> {
    let heap = heap.heap()?;
    let elem = u8::try_from(elem)
        .ok()
        .and_then(ElemType::from_u8)
        .ok_or_else(|| Error::Invalid(format!("bad element type {elem} in a reference")))?;
    let desc = BlockDesc {
        offset: u64_from_f64(block, "block")?,
        data_offset: u64_from_f64(data_offset, "data offset")?,
        elem,
        length: u64_from_f64(length, "length")?,
    };
    if block_owner(&heap, &desc).as_deref() != Some(name) {
        // SAFETY: reads R's NULL.
        return Ok(Sexp(unsafe { R_NilValue }));
    }
    // Not marked: a vector that arrived by reference serializes by value
    // again unless asked (`fmalloc_ref()`, the option), so the receiver's
    // saveRDS() archives the data and its results go back by value.
    vector_over_block(&heap, &desc)
}

/// `x` marked to serialize by reference: a new vector over the same named
/// block with `x`'s attributes, or an `fmalloc_invalid` error if `x` is not
/// a vector of a named object.
/// @noRd
#[savvy]
fn fmalloc_ref_leaf(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    let found = unsafe { vec_data_of(x.0) }.map(|d| {
        // SAFETY: a live VecData, only read.
        let d = unsafe { &*d };
        (d.heap.clone(), d.desc(), !unsafe { in_file(x.0, d) })
    });
    let (heap, desc) =
        match found {
            Some((heap, desc, false)) => (heap, desc),
            Some((_, _, true)) => return Err(Error::Invalid(
                "this vector was modified in memory (it is a private copy of read-only data, or a \
                 character vector whose strings were copied out); get it again with fmalloc_get()"
                    .into(),
            )
            .into()),
            None => {
                return Err(Error::Invalid(
                    "only vectors got from a heap (fmalloc_get(), fmalloc_save()) can be sent by \
                 reference"
                        .into(),
                )
                .into())
            }
        };
    if block_owner(&heap, &desc).is_none() {
        return Err(Error::Invalid(
            "this vector is not part of a named object; save it with fmalloc_save() first".into(),
        )
        .into());
    }
    let v = vector_over_block(&heap, &desc)?;
    mark_by_reference(v.0);
    let (to, from) = (v.0, x.0);
    // SAFETY: the fresh vector is referenced by nothing R can see, and
    // `unwind_protect` allocates (its continuation token) before it runs the
    // closure: protected for the whole call. On an R error R restores the
    // protection stack to the level it had when `unwind_protect` began,
    // which still includes this protect, so one unprotect fits both paths.
    // The attribute copy allocates a pairlist, so under unwind protection.
    let copied = unsafe {
        Rf_protect(to);
        let r = savvy::unwind_protect::unwind_protect(|| {
            SHALLOW_DUPLICATE_ATTRIB(to, from);
            R_NilValue
        });
        Rf_unprotect(1);
        r
    };
    copied?;
    Ok(v)
}

fn mark_by_reference(x: SEXP) {
    // SAFETY: x was just made by `vector_over_block`: one of our instances.
    if let Some(d) = unsafe { vec_data_of(x) } {
        // SAFETY: a live VecData, not borrowed elsewhere.
        unsafe { (*d).by_reference = true };
    }
}
