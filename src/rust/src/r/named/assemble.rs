//! Building a named object from its meta (v2, `format::meta`): lists,
//! inline vectors, attributes and one fresh ALTREP vector over each stored
//! block, built directly in R memory. No R code runs and nothing recurses:
//! decoded nodes point forward only (pre-order), so building them from the
//! last to the first finds every element and attribute value ready.
//!
//! Why this is done here and not in R: R would copy. A vector R code takes
//! out of a list (`leaves[[i]]`) or receives through a promise is *shared*
//! (reference count 2), so the user's first `x[i] <- v` would duplicate it
//! instead of writing into the file. Here every list node of the result is
//! new and every leaf is referenced exactly once, by its parent.
//!
//! Attributes are checked against what R's `setAttrib()` accepts *before*
//! it is called (dim matching the length, dimnames matching dim, a factor
//! class only on integers, ...): damaged data is an `fmalloc_corrupt` error,
//! never an R error from deep inside.

use std::ffi::CString;

use savvy::unwind_protect::unwind_protect;
use savvy::{OwnedListSexp, Sexp};

use crate::error::Error;
use crate::format::meta::{self, Meta, Node, Payload};
use crate::format::readable::check_attrs;
use crate::heap::{Entry, Heap};
use crate::r::error::protected;
use crate::r::ffi::*;
use crate::r::named::leaf::vector_over_block;
use crate::r::types::cetype;

/// The object `entry` describes.
pub(crate) fn assemble(heap: &Heap, entry: &Entry) -> savvy::Result<Sexp> {
    let corrupt = |what: String| -> savvy::Error {
        Error::corrupt(heap.path(), format!("object '{}': {what}", entry.name)).into()
    };
    let meta = meta::decode(&entry.meta, entry.blocks.len()).map_err(&corrupt)?;
    check_packages(&meta, &entry.name)?;
    // A block named twice in one entry is one vector referenced twice: the
    // descriptors must agree, or the same bytes would be read as two types.
    let mut descs: Vec<_> = entry.blocks.iter().collect();
    descs.sort_by_key(|d| d.offset);
    if descs
        .windows(2)
        .any(|w| w[0].offset == w[1].offset && w[0] != w[1])
    {
        return Err(corrupt(
            "two descriptors of one block disagree (type, offset or length)".into(),
        ));
    }
    let n = meta.nodes.len();
    // Node i's R object, once built (NULL until then); the references it
    // holds are dropped at the end, leaving one per object.
    let holder = OwnedListSexp::new(n, false)?;
    let h = holder.inner();
    for id in (0..n).rev() {
        let node = &meta.nodes[id];
        let obj = match &node.payload {
            Payload::Block { index, elem } => {
                let desc = entry
                    .blocks
                    .get(*index as usize)
                    .ok_or_else(|| corrupt(format!("no block {}", index + 1)))?;
                if desc.elem != *elem {
                    return Err(corrupt(format!(
                        "block {} holds {:?} data but is described as {elem:?}",
                        index + 1,
                        desc.elem
                    )));
                }
                vector_over_block(heap, desc)?.0
            }
            // SAFETY: builds a new vector from decoded (checked) data.
            payload => unsafe { new_node(payload)? },
        };
        // SAFETY: id < n; `h` is protected by `holder`.
        unsafe { SET_VECTOR_ELT(h, id as R_xlen_t, obj) };
        let lengths = |j: usize| -> u64 {
            // SAFETY: j < n; reads the length of a built object.
            unsafe { XLENGTH(VECTOR_ELT(h, j as R_xlen_t)) as u64 }
        };
        let order = check_attrs(&meta, id, &lengths).map_err(&corrupt)?;
        // SAFETY: every element and attribute value of `node` was built
        // (forward references only) and is held by `h`.
        unsafe { finish_node(h, id, node, &order)? };
    }
    // SAFETY: protect the result while `holder` drops its references
    // (SET_VECTOR_ELT decrements the old value's reference count), so the
    // result and each leaf end up referenced once, by their parents.
    let out = unsafe {
        let out = Rf_protect(VECTOR_ELT(h, 0));
        for i in 0..n {
            SET_VECTOR_ELT(h, i as R_xlen_t, R_NilValue);
        }
        Rf_unprotect(1);
        out
    };
    Ok(Sexp(out))
}

/// Refuses an object whose class names a package (the `package` attribute
/// of an S4 class) that is not loaded: R would load it to build or show the
/// object, running that package's code, and nothing read from a heap file
/// may make R load a namespace. The user loads the package, then gets the
/// object.
fn check_packages(meta: &Meta, name: &str) -> savvy::Result<()> {
    for node in &meta.nodes {
        for (attr, v) in &node.attrs {
            if attr != b"class" {
                continue;
            }
            let Some(class) = meta.nodes.get(*v) else {
                continue;
            };
            for (a, p) in &class.attrs {
                if a != b"package" {
                    continue;
                }
                let Some(Payload::Character(pkgs)) = meta.nodes.get(*p).map(|n| &n.payload) else {
                    return Err(Error::Unsupported(format!(
                        "object '{name}': the package of its class is not a string"
                    ))
                    .into());
                };
                for pkg in pkgs.iter().flatten() {
                    let pkg = String::from_utf8_lossy(&pkg.0);
                    // SAFETY: R API calls on R's main thread.
                    if !unsafe { namespace_loaded(&pkg)? } {
                        return Err(Error::Unsupported(format!(
                            "object '{name}' has a class of package '{pkg}', which is not \
                             loaded; Rfmalloc never loads a package named in a heap file: \
                             load it yourself (library({pkg})) and try again"
                        ))
                        .into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether `pkg` is ".GlobalEnv" or a loaded namespace (base's
/// `isNamespaceLoaded()`, which never loads one).
///
/// # Safety
/// R API calls; must run on R's main thread.
unsafe fn namespace_loaded(pkg: &str) -> savvy::Result<bool> {
    if pkg == ".GlobalEnv" {
        return Ok(true);
    }
    let len = pkg.len().min(i32::MAX as usize) as i32;
    let text = pkg.as_ptr() as *const std::os::raw::c_char;
    // SAFETY: plain R allocations and a call of a base function in the base
    // environment; an R error longjmps into unwind protection, past no Rust
    // values with destructors (`pkg` is borrowed from the caller).
    unsafe {
        protected(|| {
            let s = Rf_protect(Rf_ScalarString(Rf_mkCharLenCE(text, len, CE_UTF8)));
            let call = Rf_protect(Rf_lang2(Rf_install(c"isNamespaceLoaded".as_ptr()), s));
            let v = Rf_eval(call, R_BaseEnv);
            let loaded = TYPEOF(v) as SEXPTYPE == LGLSXP && XLENGTH(v) == 1 && *LOGICAL(v) == 1;
            Rf_unprotect(2);
            loaded
        })
    }
}

/// A new R object for a non-block node (its elements and attributes are
/// set by `finish_node`).
///
/// # Safety
/// Calls into R; the result is unprotected (the caller stores it at once).
unsafe fn new_node(payload: &Payload) -> savvy::Result<SEXP> {
    // SAFETY: allocations and element writes of a new vector of the right
    // type and length; an R error longjmps into unwind protection, past no
    // Rust-owned values (`payload` is borrowed from the caller).
    unsafe {
        protected(|| match payload {
            Payload::Null | Payload::Block { .. } => R_NilValue,
            Payload::S4Object => Rf_allocS4Object(),
            Payload::List(n) => Rf_allocVector(VECSXP, *n as R_xlen_t),
            Payload::Logical(v) => {
                let x = Rf_allocVector(LGLSXP, v.len() as R_xlen_t);
                copy_to(LOGICAL(x), v);
                x
            }
            Payload::Integer(v) => {
                let x = Rf_allocVector(INTSXP, v.len() as R_xlen_t);
                copy_to(INTEGER(x), v);
                x
            }
            Payload::Double(v) => {
                let x = Rf_allocVector(REALSXP, v.len() as R_xlen_t);
                copy_to(REAL(x), v);
                x
            }
            Payload::Complex(v) => {
                let x = Rf_allocVector(CPLXSXP, v.len() as R_xlen_t);
                let dst = COMPLEX(x);
                for (i, [r, im]) in v.iter().enumerate() {
                    *dst.add(i) = Rcomplex { r: *r, i: *im };
                }
                x
            }
            Payload::Raw(v) => {
                let x = Rf_allocVector(RAWSXP, v.len() as R_xlen_t);
                copy_to(RAW(x), v);
                x
            }
            Payload::Character(v) => {
                let x = Rf_protect(Rf_allocVector(STRSXP, v.len() as R_xlen_t));
                for (i, s) in v.iter().enumerate() {
                    let c = match s {
                        None => R_NaString,
                        // Lengths fit i32 and hold no NUL (checked by
                        // the decoder).
                        Some((b, e)) => Rf_mkCharLenCE(
                            b.as_ptr() as *const std::os::raw::c_char,
                            b.len() as i32,
                            cetype(*e),
                        ),
                    };
                    SET_STRING_ELT(x, i as R_xlen_t, c);
                }
                Rf_unprotect(1);
                x
            }
        })
    }
}

/// # Safety
/// `dst` points at `src.len()` writable `T`s (or `src` is empty).
unsafe fn copy_to<T: Copy>(dst: *mut T, src: &[T]) {
    if !src.is_empty() {
        // SAFETY: see the function's contract; a new vector never overlaps.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
    }
}

/// Sets node `id`'s elements, attributes (in `order`) and S4 bit.
///
/// # Safety
/// `h` is the protected holder list; every node `node` refers to is built
/// and stored in it.
unsafe fn finish_node(h: SEXP, id: usize, node: &Node, order: &[usize]) -> savvy::Result<()> {
    if node.children.is_empty() && node.attrs.is_empty() && !node.s4 {
        return Ok(());
    }
    let names: Vec<CString> = order
        .iter()
        .filter_map(|&k| node.attrs.get(k))
        .map(|(name, _)| CString::new(name.clone()))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            // (The meta decoder refuses such names first: unreachable.)
            Error::Unsupported("an attribute name with a NUL byte".into())
        })?;
    let values: Vec<usize> = order
        .iter()
        .filter_map(|&k| node.attrs.get(k))
        .map(|&(_, v)| v)
        .collect();
    // SAFETY: element and attribute writes on objects held by `h`; an R
    // error longjmps into unwind_protect, past no Rust-owned values (`names`
    // and `values` live in this frame, outside the closure). The object is
    // stored again (Rf_asS4 may return a copy if it were shared; it is not).
    unsafe {
        unwind_protect(|| {
            let x = VECTOR_ELT(h, id as R_xlen_t);
            for (k, &c) in node.children.iter().enumerate() {
                SET_VECTOR_ELT(x, k as R_xlen_t, VECTOR_ELT(h, c as R_xlen_t));
            }
            for (name, &v) in names.iter().zip(&values) {
                Rf_setAttrib(x, Rf_install(name.as_ptr()), VECTOR_ELT(h, v as R_xlen_t));
            }
            if node.s4 != (Rf_isS4(x) != 0) {
                let y = Rf_asS4(x, if node.s4 { TRUE } else { FALSE }, 0);
                SET_VECTOR_ELT(h, id as R_xlen_t, y);
            }
            R_NilValue
        })?;
    }
    Ok(())
}
