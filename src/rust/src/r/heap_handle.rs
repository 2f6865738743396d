//! The heap handle R holds: `FmallocHeap`, a savvy external pointer around a
//! core [`Heap`]. Thin boundary: convert arguments, call the core, convert
//! the result. R/heap.R gives it the class `fmalloc_heap` and the user API.

use std::path::PathBuf;
use std::sync::Mutex;

use savvy::{savvy, OwnedListSexp, OwnedLogicalSexp, OwnedRealSexp, OwnedStringSexp, Sexp};

use super::ffi::{R_ExternalPtrAddr, EXTPTRSXP, SEXPTYPE, TYPEOF};

use super::error::invalid;
use crate::check::{self, Problem};
use crate::error::Error;
use crate::heap::{Heap, OpenOptions};

/// An open (or closed) heap. Closing drops this handle's clone of the
/// `Heap`; vectors that hold their own clone keep the mapping alive.
/// @noRd
#[savvy]
pub struct FmallocHeap {
    heap: Option<Heap>,
    /// Kept for messages after close.
    path: PathBuf,
    /// Whether `open` initialised the file.
    created: bool,
}

/// Addresses of the live `FmallocHeap` values behind savvy's external
/// pointers. Anything can sit in a `.ptr` binding (a forged environment, a
/// handle restored by `readRDS()` whose pointer is NULL), so an address is
/// dereferenced only when it is in this list: [`handle_at`]. An address
/// enters when R/heap.R registers a freshly opened handle
/// (`fmalloc_handle_register()`) and leaves when savvy's finalizer drops it.
static HANDLES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn handles() -> std::sync::MutexGuard<'static, Vec<usize>> {
    HANDLES.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for FmallocHeap {
    fn drop(&mut self) {
        let me = self as *const FmallocHeap as usize;
        handles().retain(|&h| h != me);
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

/// Registers a handle just made by `FmallocHeap$open()` (R/heap.R).
/// @noRd
#[savvy]
fn fmalloc_handle_register(heap: &FmallocHeap) -> savvy::Result<()> {
    let me = heap as *const FmallocHeap as usize;
    let mut h = handles();
    if !h.contains(&me) {
        h.push(me);
    }
    Ok(())
}

/// Why opening fell back to an older commit (the newest could not be read),
/// or NULL: R/heap.R turns it into an `fmalloc_recovered` warning.
/// @noRd
#[savvy]
fn fmalloc_heap_recovery(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    match heap.heap()?.recovery() {
        Some(why) => OwnedStringSexp::try_from(why)?.into(),
        None => savvy::NullSexp.into(),
    }
}

/// `fmalloc_check()` on a heap handle: the problems as a named list of three
/// character vectors (`object`, NA for the heap as a whole; `part`;
/// `problem`), which R/check.R makes a data frame.
/// @noRd
#[savvy]
fn fmalloc_heap_check(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    problems_list(&heap.heap()?.check())
}

/// `fmalloc_check()` on a path: opened read-only for the check alone; a
/// file that does not open is one problem (part "open"), a file locked by a
/// writer an `fmalloc_locked` error.
/// @noRd
#[savvy]
fn fmalloc_path_check(path: &str) -> savvy::Result<Sexp> {
    problems_list(&check::check_path(std::path::Path::new(path))?)
}

fn problems_list(problems: &[Problem]) -> savvy::Result<Sexp> {
    let n = problems.len();
    let mut object = OwnedStringSexp::new(n)?;
    let mut part = OwnedStringSexp::new(n)?;
    let mut problem = OwnedStringSexp::new(n)?;
    for (i, p) in problems.iter().enumerate() {
        match &p.object {
            Some(name) => object.set_elt(i, name)?,
            None => object.set_na(i)?,
        }
        part.set_elt(i, &p.part)?;
        problem.set_elt(i, &p.problem)?;
    }
    let mut out = OwnedListSexp::new(3, true)?;
    out.set_name_and_value(0, "object", object)?;
    out.set_name_and_value(1, "part", part)?;
    out.set_name_and_value(2, "problem", problem)?;
    out.into()
}

/// Whether `ptr` (a handle's `.ptr`) points to a live handle of this session.
/// @noRd
#[savvy]
fn fmalloc_handle_valid(ptr: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: ptr is a SEXP R passed in.
    let ok = unsafe { handle_at(ptr.0) }.is_some();
    OwnedLogicalSexp::try_from(ok)?.into()
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

/// Bytes from the double R passes (R has no 64-bit integer).
fn bytes_from_f64(x: f64, what: &str) -> savvy::Result<u64> {
    // 2^63: every larger double saturates in `as u64`.
    if !x.is_finite() || x <= 0.0 || x >= 9.223_372_036_854_776e18 {
        return Err(invalid(format!(
            "{what} must be a positive number of bytes, not {x}"
        )));
    }
    Ok(x.ceil() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[savvy]
impl FmallocHeap {
    /// Opens or creates the heap file at `path`.
    /// @noRd
    fn open(path: &str, readonly: bool, size_bytes: Option<f64>) -> savvy::Result<Self> {
        let initial_size = match size_bytes {
            Some(x) => Some(bytes_from_f64(x, "size")?),
            None => None,
        };
        let opts = OpenOptions {
            readonly,
            initial_size,
        };
        let (heap, created) = Heap::open(std::path::Path::new(path), &opts)
            .map_err(|e| super::holders::explain_conflict(e, readonly))?;
        Ok(FmallocHeap {
            path: heap.path().to_path_buf(),
            heap: Some(heap),
            created,
        })
    }

    /// Drops this handle's reference to the heap. Idempotent.
    /// @noRd
    fn close(&mut self) -> savvy::Result<()> {
        if let Some(heap) = self.heap.take() {
            if !heap.is_readonly() {
                heap.sync()?;
            }
        }
        Ok(())
    }

    /// @noRd
    fn is_closed(&self) -> savvy::Result<Sexp> {
        OwnedLogicalSexp::try_from(self.heap.is_none())?.into()
    }

    /// Whether `open` initialised a new heap in the file.
    /// @noRd
    fn created(&self) -> savvy::Result<Sexp> {
        OwnedLogicalSexp::try_from(self.created)?.into()
    }

    /// @noRd
    fn path(&self) -> savvy::Result<Sexp> {
        OwnedStringSexp::try_from(self.path.to_string_lossy().as_ref())?.into()
    }

    /// A named list: path, heap_id, readonly, size, used, free, objects.
    /// @noRd
    fn info(&self) -> savvy::Result<Sexp> {
        let info = self.heap()?.info();
        let mut out = OwnedListSexp::new(7, true)?;
        let path = info.path.to_string_lossy();
        out.set_name_and_value(0, "path", OwnedStringSexp::try_from(path.as_ref())?)?;
        out.set_name_and_value(1, "heap_id", OwnedStringSexp::try_from(hex(&info.heap_id))?)?;
        out.set_name_and_value(2, "readonly", OwnedLogicalSexp::try_from(info.readonly)?)?;
        let numbers = [
            ("size", info.file_bytes),
            ("used", info.used_bytes),
            ("free", info.free_bytes),
            ("objects", info.objects),
        ];
        for (i, (name, value)) in numbers.into_iter().enumerate() {
            out.set_name_and_value(i + 3, name, OwnedRealSexp::try_from(value as f64)?)?;
        }
        out.into()
    }

    /// Makes everything written so far durable.
    /// @noRd
    fn sync(&self) -> savvy::Result<()> {
        Ok(self.heap()?.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_from_r_doubles_are_checked() {
        assert_eq!(bytes_from_f64(1.0, "size").ok(), Some(1));
        assert_eq!(bytes_from_f64(1.5, "size").ok(), Some(2));
        assert_eq!(
            bytes_from_f64(50.0 * 1024.0 * 1024.0 * 1024.0, "size").ok(),
            Some(50 << 30)
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e19] {
            let e = bytes_from_f64(bad, "size").err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|m| m.starts_with("<fmalloc_invalid> ")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn heap_ids_print_as_lowercase_hex() {
        let mut id = [0u8; 16];
        id[0] = 0xab;
        id[15] = 0x01;
        assert_eq!(hex(&id), "ab000000000000000000000000000001");
    }
}
