//! Reassembling a named object: the skeleton R decoded from the meta blob,
//! with one fresh ALTREP vector over each stored block in place of its
//! placeholder (the symbol `.fmalloc_leaf_<i>`, 1-based; see R/named.R).
//!
//! Why this is done here and not in R: R would copy. A vector R code takes
//! out of a list (`leaves[[i]]`) or receives through a promise is *shared*
//! (reference count 2), so the user's first `x[i] <- v` would duplicate it
//! instead of writing into the file. Here every list node of the result is
//! new and every leaf is referenced exactly once, by its parent.

use std::cell::Cell;
use std::os::raw::c_char;

use savvy::unwind_protect::unwind_protect;
use savvy::{ListSexp, OwnedListSexp, Sexp};

use super::altrep::sexptype;
use super::ffi::*;
use super::named_leaf::vector_over_block;
use crate::error::Error;
use crate::heap::{Entry, Heap};

const PLACEHOLDER: &str = ".fmalloc_leaf_";

/// What R/named.R decoded about each leaf.
pub(crate) struct Leaves {
    /// Attributes of each leaf: a named list (values may be placeholders of
    /// other leaves, e.g. long names) or NULL.
    pub attrs: ListSexp,
    pub s4: Vec<bool>,
    /// `typeof()` of each leaf, to check against the stored block.
    pub types: Vec<&'static str>,
}

fn type_name(t: SEXPTYPE) -> &'static str {
    match t {
        LGLSXP => "logical",
        INTSXP => "integer",
        REALSXP => "double",
        CPLXSXP => "complex",
        RAWSXP => "raw",
        STRSXP => "character",
        _ => "?",
    }
}

/// The object `entry` describes, built around `skeleton`.
pub(crate) fn assemble(
    heap: &Heap,
    entry: &Entry,
    skeleton: Sexp,
    leaves: &Leaves,
) -> savvy::Result<Sexp> {
    let corrupt = |what: String| -> savvy::Error {
        Error::corrupt(heap.path(), format!("object '{}': {what}", entry.name)).into()
    };
    let n = entry.blocks.len();
    if leaves.attrs.len() != n || leaves.s4.len() != n || leaves.types.len() != n {
        return Err(corrupt(format!(
            "{n} data blocks but {} described vectors",
            leaves.attrs.len()
        )));
    }
    // The leaves, held by `tmp` until they are placed; its last slot
    // receives the result.
    let mut tmp = OwnedListSexp::new(n + 1, false)?;
    for (i, desc) in entry.blocks.iter().enumerate() {
        let stored = type_name(sexptype(desc.elem));
        if stored != leaves.types[i] {
            return Err(corrupt(format!(
                "vector {} is stored as {stored} but described as {}",
                i + 1,
                leaves.types[i]
            )));
        }
        tmp.set_value(i, vector_over_block(heap, desc)?)?;
    }
    let tmp_list = tmp.inner();
    let bad: Cell<bool> = Cell::new(false);
    let bad_ref = &bad;

    for (i, a) in leaves.attrs.values_iter().enumerate() {
        // SAFETY: tmp_list is a protected list of n vectors.
        let leaf = unsafe { VECTOR_ELT(tmp_list, i as R_xlen_t) };
        if let savvy::TypedSexp::List(a) = a.into_typed() {
            // `dim` first: `dimnames` is checked against it.
            let dim_first = a.iter().filter(|(k, _)| *k == "dim");
            let others = a.iter().filter(|(k, _)| *k != "dim" && !k.is_empty());
            for (key, value) in dim_first.chain(others) {
                // SAFETY: value is a valid SEXP; resolving only reads.
                let value = unsafe { resolve(value.0, tmp_list, bad_ref) };
                if bad.get() {
                    return Err(corrupt(format!(
                        "bad attribute '{key}' of vector {}",
                        i + 1
                    )));
                }
                // An R error (e.g. dims that do not match the length) stays
                // an R error: savvy must resume R's unwinding.
                set_attr(leaf, key, value).map_err(|e| match e {
                    savvy::Error::Aborted(_) => e,
                    e => corrupt(format!("attribute '{key}' of vector {}: {e}", i + 1)),
                })?;
            }
        }
        if leaves.s4[i] {
            // SAFETY: `leaf` is referenced only by `tmp_list` (not shared),
            // so asS4 sets the bit on it in place and allocates nothing.
            unsafe { Rf_asS4(leaf, TRUE, 0) };
        }
    }

    let skel = skeleton.0;
    let last = n as R_xlen_t;
    // The result is stored in `tmp` rather than returned: R_UnwindProtect
    // keeps a (never released) reference to the value a function returns,
    // which would make the result look shared.
    // SAFETY: `rebuild` only allocates R vectors and reads/writes R
    // objects; an R error longjmps back into unwind_protect, past frames
    // that own no Rust values.
    unsafe {
        unwind_protect(|| {
            SET_VECTOR_ELT(tmp_list, last, rebuild(skel, tmp_list, bad_ref));
            R_NilValue
        })?;
    }
    // SAFETY: protect the result while `tmp` drops its references
    // (SET_VECTOR_ELT decrements the old value's reference count), so the
    // result and each leaf end up referenced once, by their parents.
    let out = unsafe {
        let out = Rf_protect(VECTOR_ELT(tmp_list, last));
        for i in 0..=last {
            SET_VECTOR_ELT(tmp_list, i, R_NilValue);
        }
        Rf_unprotect(1);
        out
    };
    if bad.get() {
        return Err(corrupt("bad placeholder in the structure".into()));
    }
    Ok(Sexp(out))
}

/// `attr(x, key) <- value` as R's `setAttrib()` does it (checking dim,
/// names, class, ...). Not savvy's `set_attrib`: R_UnwindProtect keeps a
/// reference to the value its function returns, and `setAttrib` may return
/// `x`, which would then look shared.
fn set_attr(x: SEXP, key: &str, value: SEXP) -> savvy::Result<()> {
    let key = std::ffi::CString::new(key)?;
    let key = key.as_ptr();
    // SAFETY: x and value are protected (in `tmp` / the attribute list R
    // passed); an R error longjmps back into unwind_protect, past frames
    // that own no Rust values (`key` lives in the caller's frame).
    unsafe {
        unwind_protect(|| {
            Rf_setAttrib(x, Rf_install(key), value);
            R_NilValue
        })?;
    }
    Ok(())
}

/// Leaf `j` for a placeholder symbol, the value itself for anything else.
/// Sets `bad` for a symbol that is not a valid placeholder.
///
/// # Safety
/// `x` is a valid SEXP, `leaves` a list.
unsafe fn resolve(x: SEXP, leaves: SEXP, bad: &Cell<bool>) -> SEXP {
    // SAFETY: header and CHARSXP reads of valid objects.
    unsafe {
        if TYPEOF(x) as SEXPTYPE != SYMSXP {
            return x;
        }
        let name = std::ffi::CStr::from_ptr(R_CHAR(PRINTNAME(x)) as *const c_char);
        let index = name
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix(PLACEHOLDER))
            .and_then(|s| s.parse::<usize>().ok())
            // The last slot of `leaves` is for the result, not a leaf.
            .filter(|&j| j >= 1 && (j as R_xlen_t) < XLENGTH(leaves));
        match index {
            Some(j) => VECTOR_ELT(leaves, (j - 1) as R_xlen_t),
            None => {
                bad.set(true);
                R_NilValue
            }
        }
    }
}

/// A copy of `node` with every list node new and placeholders resolved.
///
/// # Safety
/// Must run under unwind protection (it allocates); `leaves` is a list.
unsafe fn rebuild(node: SEXP, leaves: SEXP, bad: &Cell<bool>) -> SEXP {
    // SAFETY: see the function's contract; every new vector is protected
    // while further allocations happen.
    unsafe {
        match TYPEOF(node) as SEXPTYPE {
            SYMSXP => resolve(node, leaves, bad),
            VECSXP => {
                let len = XLENGTH(node);
                let out = Rf_protect(Rf_allocVector(VECSXP, len));
                for k in 0..len {
                    SET_VECTOR_ELT(out, k, rebuild(VECTOR_ELT(node, k), leaves, bad));
                }
                // The attributes, with placeholder values (e.g. long row
                // names) resolved; setAttrib sets the object bit with the
                // class. A symbol that is no placeholder sets `bad` (and the
                // attribute to NULL, which setAttrib skips).
                for_each_attrib(node, |tag, value| {
                    Rf_setAttrib(out, tag, resolve(value, leaves, bad));
                });
                let out = if Rf_isS4(node) != 0 {
                    // `out` is not shared, so asS4 sets the bit in place.
                    Rf_asS4(out, TRUE, 0)
                } else {
                    out
                };
                Rf_unprotect(1);
                out
            }
            _ => node,
        }
    }
}
