//! Serializing named vectors by reference.
//!
//! By default an fmalloc vector serializes by value (R writes its elements),
//! so `saveRDS()` files and data sent to other processes are readable
//! without Rfmalloc. A vector whose block belongs to a named object can
//! instead be written as a *reference* -- when it was marked with
//! `fmalloc_ref()` or when `options(fmalloc.serialize = "reference")` is
//! set -- so that a process on the same machine (a `parallel` PSOCK
//! worker) maps the same file instead of receiving a copy.
//!
//! The reference (the ALTREP serialized state) is the list
//!
//! | field         | type      | meaning                                   |
//! |---------------|-----------|-------------------------------------------|
//! | `version`     | integer   | 1                                         |
//! | `path`        | character | the heap file                             |
//! | `heap_id`     | character | the heap's random id, hex                 |
//! | `block`       | double    | payload offset of the named block         |
//! | `data_offset` | double    | file offset of element 0 (or the pool)    |
//! | `elem`        | integer   | `ElemType` code                           |
//! | `length`      | double    | elements (pool bytes for strings)         |
//!
//! Unserializing calls R (`.fm_reconnect()` in R/named.R), which opens the
//! heap (read-only if it can), checks its id and asks
//! [`fmalloc_named_block_vector`] for a vector over the block, which must
//! still belong to a named object with exactly this description. Anything
//! else is a classed R error.

use std::os::raw::c_char;

use savvy::{savvy, OwnedIntegerSexp, OwnedListSexp, OwnedRealSexp, OwnedStringSexp, Sexp};

use super::altrep::{guard, private_copy, vec_data_of, VecData};
use super::ffi::*;
use super::heap_handle::FmallocHeap;
use super::named_leaf::vector_over_block;
use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};

const STATE_VERSION: i32 = 1;

/// Whether the option `fmalloc.serialize` is `"reference"`.
///
/// # Safety
/// Reads R's options; must run on R's main thread.
unsafe fn reference_option() -> bool {
    // SAFETY: Rf_install of an existing symbol and Rf_GetOption1 do not
    // allocate; the option value is only read.
    unsafe {
        let v = Rf_GetOption1(Rf_install(c"fmalloc.serialize".as_ptr()));
        if TYPEOF(v) as SEXPTYPE != STRSXP || XLENGTH(v) != 1 {
            return false;
        }
        let s = STRING_ELT(v, 0);
        s != R_NaString
            && std::ffi::CStr::from_ptr(R_CHAR(s) as *const c_char).to_bytes() == b"reference"
    }
}

/// Whether `desc` is exactly a block of a named object of `heap` (the core
/// knows which blocks are named).
fn is_named_block(heap: &Heap, desc: &BlockDesc) -> bool {
    heap.named_desc(desc.offset).as_ref() == Some(desc)
}

/// Whether the vector's values are those in the file: no private copy, or
/// a copy (R asked a read-only vector for a writable pointer, e.g. to
/// serialize it by value) not changed since.
///
/// # Safety
/// `x` must be an fmalloc instance and `d` its data.
unsafe fn in_file(x: SEXP, d: &VecData) -> bool {
    // SAFETY: forwarded to the caller.
    let Some(copy) = (unsafe { private_copy(x) }) else {
        return true;
    };
    if d.elem == ElemType::String {
        return false;
    }
    let bytes = (d.len * d.elem.size()) as usize;
    // SAFETY: the mapping and data2's private copy each hold `len`
    // elements while the vector lives.
    unsafe {
        std::slice::from_raw_parts(d.mapped() as *const u8, bytes)
            == std::slice::from_raw_parts(data_ptr(copy) as *const u8, bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The reference state of `heap`'s block `desc`.
fn state(heap: &Heap, desc: &BlockDesc) -> savvy::Result<Sexp> {
    let mut out = OwnedListSexp::new(7, true)?;
    out.set_name_and_value(
        0,
        "version",
        OwnedIntegerSexp::try_from_scalar(STATE_VERSION)?,
    )?;
    let path = heap.path().to_string_lossy();
    out.set_name_and_value(1, "path", OwnedStringSexp::try_from_scalar(path.as_ref())?)?;
    let id = hex(&heap.heap_id());
    out.set_name_and_value(2, "heap_id", OwnedStringSexp::try_from_scalar(id.as_str())?)?;
    let real = |v: u64| OwnedRealSexp::try_from_scalar(v as f64);
    out.set_name_and_value(3, "block", real(desc.offset)?)?;
    out.set_name_and_value(4, "data_offset", real(desc.data_offset)?)?;
    let elem = OwnedIntegerSexp::try_from_scalar(desc.elem as i32)?;
    out.set_name_and_value(5, "elem", elem)?;
    out.set_name_and_value(6, "length", real(desc.length)?)?;
    out.into()
}

/// ALTREP Serialized_state of every fmalloc class.
///
/// # Safety
/// `x` must be an instance of one of the fmalloc classes.
pub(crate) unsafe fn serialized_state(x: SEXP) -> SEXP {
    // SAFETY: x is one of our instances (R's contract for this method).
    let Some(d) = (unsafe { vec_data_of(x) }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a live VecData, only read.
    let d = unsafe { &*d };
    // SAFETY: reads an option.
    if !unsafe { in_file(x, d) } || !(d.by_reference || unsafe { reference_option() }) {
        return std::ptr::null_mut();
    }
    let desc = d.desc();
    if !is_named_block(&d.heap, &desc) {
        // Unnamed data exist only in this session: by value.
        return std::ptr::null_mut();
    }
    // The list is unprotected once `state` returns; R protects it right
    // after this method returns, before it allocates again.
    guard(|| {
        state(&d.heap, &desc)
            .map(|s| s.0)
            .map_err(|e| e.to_string())
    })
}

/// ALTREP Unserialize of every fmalloc class: `.fm_reconnect(state)`.
///
/// # Safety
/// Called by R's unserialize. R errors raised by `.fm_reconnect` longjmp
/// through this frame, which holds no Rust values.
pub(crate) unsafe fn unserialize(_cls: SEXP, state: SEXP) -> SEXP {
    // SAFETY: plain R API calls with protected arguments.
    unsafe {
        let pkg = Rf_protect(Rf_mkString(c"Rfmalloc".as_ptr()));
        let ns = Rf_protect(R_FindNamespace(pkg));
        let call = Rf_protect(Rf_lang2(Rf_install(c".fm_reconnect".as_ptr()), state));
        let out = Rf_eval(call, ns);
        Rf_unprotect(3);
        out
    }
}

fn u64_from_f64(x: f64, what: &str) -> savvy::Result<u64> {
    if !(x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 9.007_199_254_740_992e15) {
        return Err(Error::Invalid(format!("bad {what} in a reference: {x}")).into());
    }
    Ok(x as u64)
}

/// A vector over the block described by a reference (serializing by value,
/// as every vector does unless asked otherwise); `NULL` when no named object of `heap` has exactly
/// this block any more.
/// @noRd
#[savvy]
fn fmalloc_named_block_vector(
    heap: &FmallocHeap,
    block: f64,
    data_offset: f64,
    elem: i32,
    length: f64,
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
    if !is_named_block(&heap, &desc) {
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
    if !is_named_block(&heap, &desc) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_numbers_must_be_exact_offsets() {
        assert_eq!(u64_from_f64(4160.0, "block").ok(), Some(4160));
        assert_eq!(u64_from_f64(0.0, "block").ok(), Some(0));
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 1e16] {
            let e = u64_from_f64(bad, "block").err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|m| m.starts_with("<fmalloc_invalid> ")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn heap_ids_are_lowercase_hex() {
        assert_eq!(hex(&[0x0f, 0xa0, 0x00]), "0fa000");
    }
}
