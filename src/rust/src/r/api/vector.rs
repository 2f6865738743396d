//! The savvy functions behind `create_fmalloc_vector()`, `is_fmalloc()`
//! and `.fmalloc_inspect()` (R/vector.R).

use savvy::{savvy, OwnedListSexp, OwnedLogicalSexp, OwnedRealSexp, OwnedStringSexp, Sexp};

use crate::r::args::{elem_arg, flag_arg, heap_of, length_arg, method_arg};
use crate::r::error::returned_form;
use crate::r::types::type_name;
use crate::r::vector::classic;
use crate::r::vector::create::{create, locate};

// The implementation of `create_fmalloc_vector()`, called by R with the
// user's arguments unchecked (`heap` is the handle, or NULL when there is no
// default heap). It is on the hot path of creating many small vectors, so
// the checks are done here and errors take the *returned* form of the one
// error mechanism (`r::error::returned_form`): the tagged message as a string of
// class `fmalloc_failure` (a new vector never has a class, so R/vector.R
// tests with the inlined `is.object()`) which R hands to `.fmalloc_raise()`.
// Raising through savvy would need `.rfm()` around every call, which costs
// more than creating a small vector. R errors raised inside R's allocator
// still propagate.
/// @noRd
#[savvy]
fn fmalloc_vector_create(
    heap: Sexp,
    elem: Sexp,
    length: Sexp,
    method: Sexp,
    init: Sexp,
) -> savvy::Result<Sexp> {
    returned_form((|| {
        // SAFETY: every argument is a SEXP R passed in.
        let heap = unsafe { heap_of(heap.0) }?;
        let elem = elem_arg(elem)?;
        let n = length_arg(length)?;
        let classic = method_arg(method)?;
        let init = flag_arg(init, "init")?;
        Ok(Sexp(create(&heap, elem, n, classic, init)?))
    })())
}

/// @noRd
#[savvy]
fn fmalloc_vector_is(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    // Only while its data are in the file: not once R replaced them by a
    // private copy (a read-only vector R modified). A classic character
    // vector's pointers are in the heap too.
    let found = unsafe { locate(x.0) }.is_some_and(|l| l.classic || !l.private);
    OwnedLogicalSexp::try_from(found)?.into()
}

/// A named list describing an fmalloc vector, or NULL.
/// @noRd
#[savvy]
fn fmalloc_vector_inspect(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    let Some(l) = (unsafe { locate(x.0) }) else {
        return savvy::NullSexp.into();
    };
    let mut out = OwnedListSexp::new(8, true)?;
    let path = l.heap.path().to_string_lossy();
    out.set_name_and_value(
        0,
        "method",
        OwnedStringSexp::try_from(if l.classic { "classic" } else { "altrep" })?,
    )?;
    out.set_name_and_value(1, "path", OwnedStringSexp::try_from(path.as_ref())?)?;
    let numbers = [
        ("block", l.desc.offset),
        ("offset", l.desc.data_offset),
        ("length", l.desc.length),
    ];
    for (i, (name, value)) in numbers.into_iter().enumerate() {
        out.set_name_and_value(i + 2, name, OwnedRealSexp::try_from(value as f64)?)?;
    }
    let kind = type_name(l.desc.elem);
    out.set_name_and_value(5, "type", OwnedStringSexp::try_from(kind)?)?;
    out.set_name_and_value(6, "private", OwnedLogicalSexp::try_from(l.private)?)?;
    out.set_name_and_value(7, "readonly", OwnedLogicalSexp::try_from(l.readonly)?)?;
    out.into()
}

/// Whether this build has the classic path (see `r::vector::classic`).
/// @noRd
#[savvy]
fn fmalloc_has_classic() -> savvy::Result<Sexp> {
    OwnedLogicalSexp::try_from(classic::AVAILABLE)?.into()
}
