//! Creating fmalloc vectors on either path, recognising them, describing
//! them: the savvy functions behind `create_fmalloc_vector()`,
//! `is_fmalloc()` and `.fmalloc_inspect()` (R/vector.R), plus the helpers
//! other `r::` modules use ([`heap_malloc`], [`block_of`]).

use std::cell::Cell;

use savvy::{
    savvy, OwnedListSexp, OwnedLogicalSexp, OwnedRealSexp, OwnedStringSexp, Sexp, TypedSexp,
};

use super::altrep::{self, BlockRef};
use super::classic;
use super::describe::describe;
use super::error::{invalid, returned_form};
use super::ffi::*;
use super::heap_handle::handle_at;
use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};

/// R does not count heap memory, so a loop that creates and drops fmalloc
/// vectors could grow the file far before R collects them. So we run R's
/// garbage collector ourselves when the bytes allocated for vectors and not
/// yet returned (by collected vectors) grew by this much since we last did.
const GC_EVERY: u64 = 1 << 30;

thread_local! {
    /// Net bytes allocated for vectors since our last GC (never below 0).
    static SINCE_GC: Cell<u64> = const { Cell::new(0) };
}

/// A collected vector returned `bytes` to its heap (called from finalizers
/// and from the classic allocator's `mem_free`, during GC: no R calls).
pub(crate) fn returned(bytes: u64) {
    SINCE_GC.with(|c| c.set(c.get().saturating_sub(bytes)));
}

fn run_gc() {
    SINCE_GC.with(|c| c.set(0));
    // SAFETY: R_gc() does not raise R errors (errors in finalizers are
    // caught by R); called on R's main thread with no lock held.
    unsafe { R_gc() };
}

/// `heap.malloc` for a vector: runs R's GC when [`GC_EVERY`] more bytes are
/// held by vectors than after the last run, and once more before giving up
/// when the heap is full, so that collected vectors return their blocks
/// first.
pub(crate) fn heap_malloc(heap: &Heap, bytes: u64) -> Result<u64, Error> {
    let since = SINCE_GC.with(|c| {
        let v = c.get().saturating_add(bytes);
        c.set(v);
        v
    });
    if since > GC_EVERY {
        run_gc();
    }
    match heap.malloc(bytes) {
        Err(Error::Full { .. }) => {
            run_gc();
            heap.malloc(bytes)
        }
        other => other,
    }
}

fn elem_from_name(name: &str) -> Option<ElemType> {
    Some(match name {
        "logical" => ElemType::Logical,
        "integer" => ElemType::Integer,
        "double" | "numeric" => ElemType::Double,
        "complex" => ElemType::Complex,
        "raw" => ElemType::Raw,
        "character" => ElemType::String,
        _ => return None,
    })
}

/// A vector length from the double R passes.
fn length_from_f64(x: f64) -> savvy::Result<u64> {
    // 2^52: every integer below is exact; R_xlen_t's limit is 2^52 too.
    if !((0.0..=4_503_599_627_370_496.0).contains(&x) && x.fract() == 0.0) {
        return Err(invalid(format!(
            "`length` must be a whole number between 0 and 2^52, not {x}"
        )));
    }
    Ok(x as u64)
}

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
    // (never a node in the shared mapping: see `r::altrep`).
    let desc = if elem == ElemType::String {
        super::altstring::new_pool(heap, n)?
    } else {
        let bytes = n
            .checked_mul(elem.size())
            .ok_or_else(|| invalid("vector too long"))?;
        new_block(heap, elem, n, bytes, |buf| {
            if init {
                buf.fill(0);
            }
            Ok(())
        })?
    };
    altrep::new_altrep(heap, &desc, BlockRef::Adopt)
}

/// A new block of `bytes` bytes in `heap` holding `length` elements of
/// `elem` (for strings `length` is the pool size in bytes), its bytes
/// written by `fill` before anyone else can see them. If `fill` fails the
/// block is released and its error returned. The caller owns the block's
/// one reference.
pub(crate) fn new_block(
    heap: &Heap,
    elem: ElemType,
    length: u64,
    bytes: u64,
    fill: impl FnOnce(&mut [u8]) -> Result<(), Error>,
) -> Result<BlockDesc, Error> {
    let off = heap_malloc(heap, bytes)?;
    let filled = if bytes == 0 {
        fill(&mut [])
    } else {
        heap.ptr(off, bytes).and_then(|p| {
            // SAFETY: [p, p + bytes) is the block just allocated, mapped
            // while `heap` lives and not shared with anyone yet.
            let buf = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) };
            fill(buf)
        })
    };
    if let Err(e) = filled {
        let _ = heap.release(off);
        return Err(e);
    }
    Ok(BlockDesc {
        offset: off,
        data_offset: off,
        elem,
        length,
    })
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
            private: unsafe { altrep::private_copy(x) }.is_some()
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

/// The symbol `.ptr` (symbols are never collected, so it is looked up once).
fn ptr_symbol() -> SEXP {
    thread_local! {
        static SYM: Cell<SEXP> = const { Cell::new(std::ptr::null_mut()) };
    }
    SYM.with(|s| {
        if s.get().is_null() {
            // SAFETY: Rf_install on R's main thread with a NUL-terminated name.
            s.set(unsafe { Rf_install(c".ptr".as_ptr()) });
        }
        s.get()
    })
}

/// The core heap of a handle passed from R (`NULL`: no default heap).
///
/// # Safety
/// `x` must be a valid SEXP.
unsafe fn heap_of(x: SEXP) -> savvy::Result<Heap> {
    // SAFETY: type and attribute reads of a valid SEXP; `.ptr` of an
    // environment of class "fmalloc_heap" (set by fmalloc_open() on the
    // savvy object) is the external pointer savvy made for a boxed
    // FmallocHeap, as R/heap.R's .check_heap() and savvy's wrappers assume.
    unsafe {
        if x == R_NilValue {
            return Err(Error::Closed {
                path: "(no default heap: call init_fmalloc(path) first or pass `heap`)".into(),
            }
            .into());
        }
        let not_handle = || {
            invalid(format!(
                "`heap` must be a heap handle from fmalloc_open() or NULL, not {}",
                describe(Sexp(x))
            ))
        };
        if TYPEOF(x) as SEXPTYPE != ENVSXP || Rf_inherits(x, c"fmalloc_heap".as_ptr()) == 0 {
            return Err(not_handle());
        }
        let ptr = frame_value(x, ptr_symbol());
        match handle_at(ptr) {
            Some(handle) => handle.heap(),
            None => Err(not_handle()),
        }
    }
}

fn elem_arg(x: Sexp) -> savvy::Result<ElemType> {
    let raw = x.0;
    let bad = || {
        invalid(format!(
            "`type` must be one of \"logical\", \"integer\", \"numeric\", \"double\", \"complex\", \"raw\", \"character\", not {}",
            describe(Sexp(raw))
        ))
    };
    // SAFETY: x is a SEXP R passed in (see `single_string`).
    unsafe { single_string(x.0) }
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(elem_from_name)
        .ok_or_else(bad)
}

/// The bytes of `x` when it is a character vector of length 1 and not NA
/// (no translation: the names compared against are ASCII).
///
/// # Safety
/// `x` must be a valid SEXP; the bytes live as long as `x`.
unsafe fn single_string<'a>(x: SEXP) -> Option<&'a [u8]> {
    // SAFETY: type and length read first; element 0 of a STRSXP is a
    // CHARSXP whose R_CHAR is NUL-terminated.
    unsafe {
        if TYPEOF(x) as SEXPTYPE != STRSXP || XLENGTH(x) != 1 {
            return None;
        }
        let c = STRING_ELT(x, 0);
        if c == R_NaString {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(R_CHAR(c)).to_bytes())
    }
}

fn length_arg(x: Sexp) -> savvy::Result<u64> {
    let raw = x.0;
    let bad = || {
        invalid(format!(
            "`length` must be a single whole number >= 0, not {}",
            describe(Sexp(raw))
        ))
    };
    let v = match x.into_typed() {
        TypedSexp::Real(r) if r.len() == 1 => r.as_slice()[0],
        TypedSexp::Integer(i) if i.len() == 1 => match i.as_slice()[0] {
            i32::MIN => return Err(bad()),
            v => f64::from(v),
        },
        _ => return Err(bad()),
    };
    length_from_f64(v)
}

/// `TRUE` for the classic method; NULL (the argument was missing) is ALTREP.
fn method_arg(x: Sexp) -> savvy::Result<bool> {
    let raw = x.0;
    let bad = || {
        invalid(format!(
            "`method` must be \"altrep\" or \"classic\", not {}",
            describe(Sexp(raw))
        ))
    };
    let s = match x.into_typed() {
        TypedSexp::Null(_) => return Ok(false),
        TypedSexp::String(s) => s,
        _ => return Err(bad()),
    };
    let mut it = s.iter();
    match (it.next(), it.next(), it.next()) {
        (Some("altrep"), None, _) | (Some("altrep"), Some("classic"), None) => Ok(false),
        (Some("classic"), None, _) => Ok(true),
        _ => Err(bad()),
    }
}

fn flag_arg(x: Sexp, name: &str) -> savvy::Result<bool> {
    let raw = x.0;
    match x.into_typed() {
        TypedSexp::Logical(l) if l.len() == 1 && l.as_slice_raw()[0] != i32::MIN => {
            Ok(l.as_slice_raw()[0] != 0)
        }
        _ => Err(invalid(format!(
            "`{name}` must be TRUE or FALSE, not {}",
            describe(Sexp(raw))
        ))),
    }
}

/// @noRd
#[savvy]
fn fmalloc_vector_is(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    let found = unsafe { locate(x.0) }.is_some();
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
    let kind = match l.desc.elem {
        ElemType::Logical => "logical",
        ElemType::Integer => "integer",
        ElemType::Double => "double",
        ElemType::Complex => "complex",
        ElemType::Raw => "raw",
        ElemType::String => "character",
        ElemType::Bytes => "bytes",
    };
    out.set_name_and_value(5, "type", OwnedStringSexp::try_from(kind)?)?;
    out.set_name_and_value(6, "private", OwnedLogicalSexp::try_from(l.private)?)?;
    out.set_name_and_value(7, "readonly", OwnedLogicalSexp::try_from(l.readonly)?)?;
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_and_lengths() {
        assert_eq!(elem_from_name("numeric"), Some(ElemType::Double));
        assert_eq!(elem_from_name("double"), Some(ElemType::Double));
        assert_eq!(elem_from_name("character"), Some(ElemType::String));
        assert_eq!(elem_from_name("list"), None);
        assert_eq!(length_from_f64(0.0).ok(), Some(0));
        assert_eq!(length_from_f64(2147483658.0).ok(), Some(2147483658));
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 1e17] {
            assert!(length_from_f64(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn r_allocator_routing() {
        assert!(!classic::r_uses_allocator(ElemType::Double, 0));
        assert!(!classic::r_uses_allocator(ElemType::Integer, 1));
        assert!(!classic::r_uses_allocator(ElemType::Logical, 1));
        assert!(classic::r_uses_allocator(ElemType::Raw, 1));
        assert!(classic::r_uses_allocator(ElemType::Complex, 1));
        assert!(classic::r_uses_allocator(ElemType::String, 1));
        assert!(classic::r_uses_allocator(ElemType::Double, 2));
    }
}

/// Whether this build has the classic path (see `r::classic`).
/// @noRd
#[savvy]
fn fmalloc_has_classic() -> savvy::Result<Sexp> {
    OwnedLogicalSexp::try_from(classic::AVAILABLE)?.into()
}
