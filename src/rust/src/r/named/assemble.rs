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
use crate::heap::{ElemType, Entry, Heap};
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

/// The length of a node's R object (0 for NULL and S4 objects).
fn node_len(meta: &Meta, id: usize, built: &dyn Fn(usize) -> u64) -> u64 {
    match meta.nodes.get(id).map(|n| &n.payload) {
        Some(Payload::Block { .. }) => built(id),
        Some(Payload::List(n)) => *n,
        Some(Payload::Logical(v) | Payload::Integer(v)) => v.len() as u64,
        Some(Payload::Double(v)) => v.len() as u64,
        Some(Payload::Complex(v)) => v.len() as u64,
        Some(Payload::Raw(v)) => v.len() as u64,
        Some(Payload::Character(v)) => v.len() as u64,
        _ => 0,
    }
}

/// The number of rows row names `id` stand for: the compact form
/// `c(NA, n)` (either sign) means |n|, anything else one per element.
/// `None` for row names R would refuse or coerce with a warning (NA in the
/// compact form, doubles that are not whole numbers in R's integer range).
fn row_count(meta: &Meta, id: usize, built: &dyn Fn(usize) -> u64) -> Option<u64> {
    let n = match meta.nodes.get(id).map(|n| &n.payload)? {
        Payload::Integer(r) if r.len() == 2 && r[0] == i32::MIN => {
            if r[1] == i32::MIN {
                return None;
            }
            u64::from(r[1].unsigned_abs())
        }
        Payload::Double(r) => {
            let whole = |x: &f64| x.is_finite() && x.fract() == 0.0 && x.abs() <= i32::MAX as f64;
            if !r.iter().all(whole) {
                return None;
            }
            r.len() as u64
        }
        _ => node_len(meta, id, built),
    };
    (n <= i32::MAX as u64).then_some(n)
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

/// Whether node `id` is a character vector (inline or a string block).
fn is_character(meta: &Meta, id: usize) -> bool {
    matches!(
        meta.nodes.get(id).map(|n| &n.payload),
        Some(Payload::Character(_))
            | Some(Payload::Block {
                elem: ElemType::String,
                ..
            })
    )
}

/// Checks node `id`'s attributes against what R's `setAttrib()` accepts;
/// returns the order to set them in (`dim` first: `dimnames` and `tsp` are
/// checked against it).
fn check_attrs(meta: &Meta, id: usize, built: &dyn Fn(usize) -> u64) -> Result<Vec<usize>, String> {
    let node = meta.nodes.get(id).ok_or("no such node")?;
    if node.attrs.is_empty() {
        return Ok(Vec::new());
    }
    if matches!(node.payload, Payload::Null) {
        return Err("attributes on NULL".into());
    }
    let len = node_len(meta, id, built);
    let is_vector = !matches!(node.payload, Payload::S4Object);
    let is_integer = matches!(
        node.payload,
        Payload::Integer(_)
            | Payload::Block {
                elem: ElemType::Integer,
                ..
            }
    );
    let value = |v: usize| meta.nodes.get(v).map(|n| &n.payload);
    let mut dim: Option<&Vec<i32>> = None;
    for (name, v) in &node.attrs {
        let bad = |what: &str| {
            format!(
                "attribute '{}' {what}",
                String::from_utf8_lossy(name)
                    .chars()
                    .take(40)
                    .collect::<String>()
            )
        };
        match name.as_slice() {
            b"dim" => {
                let Some(Payload::Integer(d)) = value(*v) else {
                    return Err(bad("is not an integer vector"));
                };
                let mut prod: u128 = 1;
                for &x in d {
                    if x < 0 {
                        return Err(bad("has a negative or NA extent"));
                    }
                    prod = prod.saturating_mul(x as u128);
                }
                if d.is_empty() || !is_vector || prod != u128::from(len) {
                    return Err(bad(&format!("does not match the length {len}")));
                }
                if dim.replace(d).is_some() {
                    return Err(bad("appears twice"));
                }
            }
            b"names"
                if !is_vector || !is_character(meta, *v) || node_len(meta, *v, built) != len =>
            {
                return Err(bad(&format!("is not {len} strings")));
            }
            b"class" => {
                let ok = match value(*v) {
                    Some(Payload::Character(cls)) => {
                        is_integer
                            || !cls
                                .iter()
                                .any(|c| matches!(c, Some((b, _)) if b == b"factor"))
                    }
                    _ => false,
                };
                if !ok {
                    return Err(bad(
                        "is not a valid class (or a factor that is not integer)",
                    ));
                }
            }
            b"comment" if !is_character(meta, *v) => {
                return Err(bad("is not character"));
            }
            b"row.names" => {
                let ok = matches!(
                    value(*v),
                    Some(
                        Payload::Integer(_)
                            | Payload::Double(_)
                            | Payload::Character(_)
                            | Payload::Block {
                                elem: ElemType::Integer | ElemType::Double | ElemType::String,
                                ..
                            }
                    )
                );
                if !ok || row_count(meta, *v, built).is_none() {
                    return Err(bad("is not valid row names"));
                }
            }
            _ => {}
        }
    }
    // Classes whose R methods fail with unclassed errors on bad parts: a
    // factor (integer, checked above) needs character levels, a date-time
    // a character time zone, if any.
    let has_class = |want: &[u8]| {
        node.attrs.iter().any(|(k, v)| {
            k == b"class"
                && matches!(value(*v), Some(Payload::Character(c))
                    if c.iter().any(|c| matches!(c, Some((b, _)) if b == want)))
        })
    };
    let attr_is_character = |want: &[u8]| {
        node.attrs
            .iter()
            .find(|(k, _)| k == want)
            .map(|&(_, v)| is_character(meta, v))
    };
    if has_class(b"factor") && attr_is_character(b"levels") != Some(true) {
        return Err("a factor without character levels".into());
    }
    if has_class(b"POSIXct") && attr_is_character(b"tzone") == Some(false) {
        return Err("a date-time whose time zone is not character".into());
    }
    // A data frame's columns have as many rows as its row names say (R
    // would print billions of rows, or fail unclassed).
    if has_class(b"data.frame") {
        if let Some(&(_, rn)) = node.attrs.iter().find(|(k, _)| k == b"row.names") {
            let rows = row_count(meta, rn, built).ok_or("attribute 'row.names' is not valid")?;
            for &c in &node.children {
                let Some(col) = meta.nodes.get(c) else {
                    continue;
                };
                // Nested data frames carry their own row names; a matrix
                // column has `rows` rows of several columns.
                if col.attrs.iter().any(|(k, _)| k == b"row.names") {
                    continue;
                }
                let col_rows = match col.attrs.iter().find(|(k, _)| k == b"dim") {
                    Some(&(_, d)) => match value(d) {
                        Some(Payload::Integer(d)) => d.first().map_or(0, |&r| r.max(0) as u64),
                        _ => 0,
                    },
                    None => node_len(meta, c, built),
                };
                if col_rows != rows {
                    return Err(format!(
                        "a data frame of {rows} rows has a column of {col_rows} rows"
                    ));
                }
            }
        }
    }
    // Checks that depend on dim (set first).
    for (name, v) in &node.attrs {
        let bad = |what: &str| format!("attribute '{}' {what}", String::from_utf8_lossy(name));
        match name.as_slice() {
            b"dimnames" => {
                let d = dim.ok_or_else(|| bad("without dim"))?;
                let elems = match meta.nodes.get(*v) {
                    Some(Node {
                        payload: Payload::List(_),
                        children,
                        ..
                    }) => children,
                    _ => return Err(bad("is not a list")),
                };
                if elems.len() != d.len() {
                    return Err(bad("does not match dim"));
                }
                for (&e, &extent) in elems.iter().zip(d) {
                    let n = node_len(meta, e, built);
                    let ok = matches!(value(e), Some(Payload::Null))
                        || (is_character(meta, e) && (n == 0 || n == extent as u64));
                    if !ok {
                        return Err(bad("does not match dim"));
                    }
                }
            }
            b"tsp" => {
                let Some(Payload::Double(t)) = value(*v) else {
                    return Err(bad("is not 3 numbers"));
                };
                let rows = dim.and_then(|d| d.first()).map_or(len, |&r| r as u64);
                let ok = is_vector
                    && t.len() == 3
                    && t.iter().all(|x| x.is_finite())
                    && t[2] > 0.0
                    && rows > 0
                    && rows <= i32::MAX as u64
                    && (t[1] - t[0] - (rows - 1) as f64 / t[2]).abs() <= 1e-5;
                if !ok {
                    return Err(bad("is not a valid time series period"));
                }
            }
            _ => {}
        }
    }
    let dim_first = node.attrs.iter().position(|(k, _)| k == b"dim");
    Ok(dim_first
        .into_iter()
        .chain((0..node.attrs.len()).filter(|&k| Some(k) != dim_first))
        .collect())
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
