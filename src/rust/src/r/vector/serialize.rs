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
//! `fmalloc_named_block_vector()` (`r::api::reference`) for a vector over the block, which must
//! still belong to a named object with exactly this description. Anything
//! else is a classed R error.

use savvy::{OwnedIntegerSexp, OwnedListSexp, OwnedRealSexp, OwnedStringSexp, Sexp};

use crate::heap::{BlockDesc, ElemType, Heap};
use crate::r::args::single_string;
use crate::r::error::{guard, Failure};
use crate::r::ffi::*;
use crate::r::types::hex;
use crate::r::vector::data::{data_of, private_copy, VecData};

const STATE_VERSION: i32 = 2;

/// Whether the option `fmalloc.serialize` is `"reference"`.
///
/// # Safety
/// Reads R's options; must run on R's main thread.
unsafe fn reference_option() -> bool {
    // SAFETY: Rf_install of an existing symbol and Rf_GetOption1 do not
    // allocate; the option value is only read.
    unsafe {
        let v = Rf_GetOption1(Rf_install(c"fmalloc.serialize".as_ptr()));
        single_string(v) == Some(b"reference")
    }
}

/// The name of the object of `heap` of which `desc` is exactly a block
/// (the core knows which blocks are named).
pub(crate) fn block_owner(heap: &Heap, desc: &BlockDesc) -> Option<String> {
    heap.named_owner(desc.offset)
        .filter(|(d, _)| d == desc)
        .map(|(_, name)| name)
}

/// Whether the vector's values are those in the file: no private copy, a
/// copy (R asked a read-only vector for a writable pointer, e.g. to
/// serialize it by value) not changed since, or the expanded strings of a
/// writable character vector (kept in step with its pool).
///
/// # Safety
/// `x` must be an fmalloc instance and `d` its data.
pub(crate) unsafe fn in_file(x: SEXP, d: &VecData) -> bool {
    // SAFETY: forwarded to the caller.
    let Some(copy) = (unsafe { private_copy(x) }) else {
        return true;
    };
    if d.elem == ElemType::String {
        // A writable vector writes every string to its pool (the copy is
        // only a cache of it); a read-only one writes only the copy.
        return !d.readonly;
    }
    let bytes = (d.len * d.elem.size()) as usize;
    // SAFETY: the mapping and data2's private copy each hold `len`
    // elements while the vector lives.
    unsafe {
        std::slice::from_raw_parts(d.mapped() as *const u8, bytes)
            == std::slice::from_raw_parts(data_ptr(copy) as *const u8, bytes)
    }
}

/// The reference state of `heap`'s block `desc` of the object `name`.
/// The name is checked at the reconnect: a block freed and taken by
/// another object of the same type and length is refused (its offsets
/// alone would match).
fn state(heap: &Heap, desc: &BlockDesc, name: &str) -> savvy::Result<Sexp> {
    let mut out = OwnedListSexp::new(8, true)?;
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
    out.set_name_and_value(7, "name", OwnedStringSexp::try_from_scalar(name)?)?;
    out.into()
}

/// ALTREP Serialized_state of every fmalloc class.
///
/// # Safety
/// `x` must be an instance of one of the fmalloc classes.
pub(crate) unsafe fn serialized_state(x: SEXP) -> SEXP {
    // SAFETY: x is one of our instances (R's contract for this method).
    let Some(d) = (unsafe { data_of(x) }) else {
        return std::ptr::null_mut();
    };
    // SAFETY: a live VecData, only read.
    let d = unsafe { &*d };
    // SAFETY: reads an option.
    if !unsafe { in_file(x, d) } || !(d.by_reference || unsafe { reference_option() }) {
        return std::ptr::null_mut();
    }
    let desc = d.desc();
    let Some(name) = block_owner(&d.heap, &desc) else {
        // Unnamed data exist only in this session: by value.
        return std::ptr::null_mut();
    };
    // The list is unprotected once `state` returns; R protects it right
    // after this method returns, before it allocates again.
    guard(|| {
        state(&d.heap, &desc, &name)
            .map(|s| s.0)
            .map_err(Failure::from)
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
