//! Arguments from R, checked and converted before anything else runs:
//! numbers R passes as doubles (sizes, lengths, offsets: R has no 64-bit
//! integer), type names, methods and flags, and the heap handle.
//!
//! The heap handle R holds is `FmallocHeap`, a savvy external pointer
//! around a core [`Heap`] (its `#[savvy]` functions are in `r::api::heap`;
//! R/heap.R gives it the class `fmalloc_heap` and the user API). Anything
//! can sit where R code expects one, so a handle is dereferenced only after
//! the lookup [`handle_at`] found its address among the live ones.
//!
//! Every failure is an `fmalloc_invalid` error (`r::error::invalid`).

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::Mutex;

use savvy::{savvy, Sexp, TypedSexp};

use crate::error::Error;
use crate::heap::{ElemType, Heap};
use crate::r::error::invalid;
use crate::r::ffi::*;
use crate::r::types::{describe, elem_from_name, TYPE_NAMES_HELP};

/// An open (or closed) heap. Closing drops this handle's clone of the
/// `Heap`; vectors that hold their own clone keep the mapping alive.
/// @noRd
#[savvy]
pub struct FmallocHeap {
    pub(crate) heap: Option<Heap>,
    /// Kept for messages after close.
    pub(crate) path: PathBuf,
    /// Whether `open` initialised the file.
    pub(crate) created: bool,
}

/// Addresses of the live `FmallocHeap` values behind savvy's external
/// pointers. Anything can sit in a `.ptr` binding (a forged environment, a
/// handle restored by `readRDS()` whose pointer is NULL), so an address is
/// dereferenced only when it is in this list: [`handle_at`]. An address
/// enters when `fmalloc_heap_open()` has made a handle, and leaves when
/// savvy's finalizer drops it.
static HANDLES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn handles() -> std::sync::MutexGuard<'static, Vec<usize>> {
    crate::heap::lock(&HANDLES)
}

impl Drop for FmallocHeap {
    fn drop(&mut self) {
        let me = self as *const FmallocHeap as usize;
        // Never waits for the lock: R's garbage collector drops handles, and
        // R can run it while this thread holds the lock (from a signal
        // handler that then ends the process, see `Heap::release`); the
        // address is left in the list then, for a process about to exit.
        if let Some(mut list) = crate::heap::try_lock(&HANDLES) {
            list.retain(|&h| h != me);
        }
    }
}

/// The handle `ptr` (an external pointer from R) points to, if it is one of
/// ours and alive.
///
/// # Safety
/// `ptr` must be a valid SEXP. The returned reference is valid until R
/// collects the handle's external pointer, i.e. while the caller's R objects
/// keep it reachable (R is single-threaded).
pub(crate) unsafe fn handle_at<'a>(ptr: savvy::ffi::SEXP) -> Option<&'a FmallocHeap> {
    // SAFETY: type and address reads of a valid SEXP.
    let addr = unsafe {
        if TYPEOF(ptr) as SEXPTYPE != EXTPTRSXP {
            return None;
        }
        R_ExternalPtrAddr(ptr) as usize
    };
    if addr == 0 || !handles().contains(&addr) {
        return None;
    }
    // SAFETY: registered addresses are live boxed FmallocHeap values (a value
    // leaves the list when dropped).
    Some(unsafe { &*(addr as *const FmallocHeap) })
}

/// How many of this session's open handles are on `heap`.
pub(crate) fn open_handles_on(heap: &Heap) -> usize {
    handles()
        .iter()
        .filter(|&&addr| {
            // SAFETY: registered addresses are live boxed FmallocHeap values
            // (a value leaves the list when dropped, under this lock).
            let h = unsafe { &*(addr as *const FmallocHeap) };
            h.heap.as_ref().is_some_and(|x| x.same(heap))
        })
        .count()
}

/// Adds a handle just opened to the live ones.
pub(crate) fn register_handle(heap: &FmallocHeap) {
    let me = heap as *const FmallocHeap as usize;
    let mut h = handles();
    if !h.contains(&me) {
        h.push(me);
    }
}

impl FmallocHeap {
    /// The open heap, or an `fmalloc_closed` error. For the other `r::`
    /// modules: `let heap = handle.heap()?;`.
    pub(crate) fn heap(&self) -> savvy::Result<Heap> {
        self.heap.clone().ok_or_else(|| {
            Error::Closed {
                path: self.path.clone(),
            }
            .into()
        })
    }
}

/// A whole number `0 <= x < below` from a double R passed; `None` for NaN,
/// infinities, fractions, negative numbers and anything too large. The one
/// check behind every count, size and offset R passes.
fn whole_from_f64(x: f64, below: f64) -> Option<u64> {
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < below).then_some(x as u64)
}

/// 2^52 + 1: every length up to R_xlen_t's limit 2^52 (all exact).
const LENGTH_BELOW: f64 = 4_503_599_627_370_497.0;
/// 2^53: below it every whole double is exact.
const EXACT_BELOW: f64 = 9_007_199_254_740_992.0;
/// 2^63: every larger double saturates in `as u64`.
const BYTES_BELOW: f64 = 9.223_372_036_854_776e18;

/// Bytes from a positive double (rounded up).
pub(crate) fn bytes_from_f64(x: f64, what: &str) -> savvy::Result<u64> {
    match whole_from_f64(x.ceil(), BYTES_BELOW) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!(
            "{what} must be a positive number of bytes, not {x}"
        ))),
    }
}

/// A vector length.
fn length_from_f64(x: f64) -> savvy::Result<u64> {
    whole_from_f64(x, LENGTH_BELOW).ok_or_else(|| {
        invalid(format!(
            "`length` must be a whole number between 0 and 2^52, not {x}"
        ))
    })
}

/// An offset or length of a serialized reference (`r::vector::serialize`).
pub(crate) fn u64_from_f64(x: f64, what: &str) -> savvy::Result<u64> {
    whole_from_f64(x, EXACT_BELOW)
        .ok_or_else(|| Error::Invalid(format!("bad {what} in a reference: {x}")).into())
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

/// The handle an environment from R holds in its `.ptr` binding (not an
/// active one), if it is one of ours and alive.
///
/// # Safety
/// `x` must be a valid SEXP; the reference is valid as for [`handle_at`].
pub(crate) unsafe fn handle_in<'a>(x: SEXP) -> Option<&'a FmallocHeap> {
    // SAFETY: type read of a valid SEXP; `frame_value` only looks the
    // binding up; `handle_at` checks the pointer before dereferencing it.
    unsafe {
        if TYPEOF(x) as SEXPTYPE != ENVSXP {
            return None;
        }
        handle_at(frame_value(x, ptr_symbol()))
    }
}

/// The core heap of a handle passed from R (`NULL`: no default heap).
///
/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn heap_of(x: SEXP) -> savvy::Result<Heap> {
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
        match handle_in(x) {
            Some(handle) => handle.heap(),
            None => Err(not_handle()),
        }
    }
}

pub(crate) fn elem_arg(x: Sexp) -> savvy::Result<ElemType> {
    let raw = x.0;
    let bad = || {
        invalid(format!(
            "`type` must be one of {TYPE_NAMES_HELP}, not {}",
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
pub(crate) unsafe fn single_string<'a>(x: SEXP) -> Option<&'a [u8]> {
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

pub(crate) fn length_arg(x: Sexp) -> savvy::Result<u64> {
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
pub(crate) fn method_arg(x: Sexp) -> savvy::Result<bool> {
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

pub(crate) fn flag_arg(x: Sexp, name: &str) -> savvy::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn is_invalid(e: Option<savvy::Error>) -> bool {
        e.map(|e| e.to_string())
            .is_some_and(|m| m.starts_with("<fmalloc_invalid> "))
    }

    #[test]
    fn sizes_from_r_doubles_are_checked() {
        assert_eq!(bytes_from_f64(1.0, "size").ok(), Some(1));
        assert_eq!(bytes_from_f64(1.5, "size").ok(), Some(2));
        assert_eq!(bytes_from_f64(0.5, "size").ok(), Some(1));
        assert_eq!(
            bytes_from_f64(50.0 * 1024.0 * 1024.0 * 1024.0, "size").ok(),
            Some(50 << 30)
        );
        for bad in [0.0, -0.5, -1.0, f64::NAN, f64::INFINITY, 1e19] {
            assert!(is_invalid(bytes_from_f64(bad, "size").err()), "{bad}");
        }
    }

    #[test]
    fn lengths_from_r_doubles_are_checked() {
        assert_eq!(length_from_f64(0.0).ok(), Some(0));
        assert_eq!(length_from_f64(2147483658.0).ok(), Some(2147483658));
        assert_eq!(length_from_f64(4_503_599_627_370_496.0).ok(), Some(1 << 52));
        for bad in [
            -1.0,
            1.5,
            f64::NAN,
            f64::INFINITY,
            1e17,
            4_503_599_627_370_498.0,
        ] {
            assert!(is_invalid(length_from_f64(bad).err()), "{bad}");
        }
    }

    #[test]
    fn reference_numbers_must_be_exact_offsets() {
        assert_eq!(u64_from_f64(4160.0, "block").ok(), Some(4160));
        assert_eq!(u64_from_f64(0.0, "block").ok(), Some(0));
        for bad in [-1.0, 1.5, f64::NAN, f64::INFINITY, 1e16] {
            assert!(is_invalid(u64_from_f64(bad, "block").err()), "{bad}");
        }
    }
}
