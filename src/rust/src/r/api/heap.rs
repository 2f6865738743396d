//! The heap handle's `#[savvy]` functions: open, close, info, sync, check,
//! and the handle registry R/heap.R uses (the handle type and its lookup
//! are `r::args`).

use savvy::{
    savvy, IntoExtPtrSexp, NotAvailableValue, OwnedListSexp, OwnedLogicalSexp, OwnedRealSexp,
    OwnedStringSexp, Sexp,
};

use crate::check::{self, Problem};
use crate::error::Error;
use crate::heap::{Heap, OpenOptions, SyncMode};
use crate::r::args::{bytes_from_f64, handle_in, open_handles_on, register_handle, FmallocHeap};
use crate::r::error::returned_form;
use crate::r::ffi::R_ExternalPtrAddr;
use crate::r::types::hex;

/// Opens or creates the heap file at `path`: the external pointer of a new
/// handle, registered (`r::args::register_handle`), which R/heap.R makes a
/// handle with savvy's `.savvy_wrap_FmallocHeap()`.
///
/// Errors take the returned form (`r::error::returned_form`), so that
/// `fmalloc_open()` needs no `.rfm()`: R lazy-loads every function at its
/// first call, and that is most of what a session's first open costs.
/// @noRd
#[savvy]
fn fmalloc_heap_open(
    path: &str,
    readonly: bool,
    recover: bool,
    size_bytes: Option<f64>,
    sync: Option<&str>,
) -> savvy::Result<Sexp> {
    returned_form((|| {
        let initial_size = match size_bytes {
            Some(x) => Some(bytes_from_f64(x, "size")?),
            None => None,
        };
        let opts = OpenOptions {
            readonly,
            initial_size,
            recover,
        };
        let (heap, created) = Heap::open(std::path::Path::new(path), &opts)
            .map_err(|e| super::holders::explain_conflict(e, readonly))?;
        if !readonly {
            set_sync(&heap, sync)?;
        }
        let handle = FmallocHeap {
            path: heap.path().to_path_buf(),
            heap: Some(heap),
            created,
        };
        let ptr = handle.into_external_pointer();
        // SAFETY: `ptr` is the external pointer savvy just made around the
        // boxed handle, alive while `ptr` is (R is single-threaded).
        register_handle(unsafe { &*(R_ExternalPtrAddr(ptr.0) as *const FmallocHeap) });
        Ok(ptr)
    })())
}

/// The sync mode of a heap just opened for writing: `sync` is "commit" or
/// "none" (checked in R), or `None` when the caller did not choose.
///
/// The mode is the open heap's, shared by every handle of the file in this
/// process (they share one `Heap`). So a new handle sets it only when no
/// other handle is open on the heap (to `sync`, or the default "commit");
/// beside open handles it takes their mode, and asking for another one is
/// an error (the open makes no handle then). The last open used to win:
/// a second open with `sync = "none"`, closed at once, left a durable
/// handle's commits unflushed, and the reverse.
fn set_sync(heap: &Heap, sync: Option<&str>) -> Result<(), Error> {
    let want = sync.map(|m| match m {
        "none" => SyncMode::None,
        _ => SyncMode::Commit,
    });
    if open_handles_on(heap) == 0 {
        return heap.set_sync(want.unwrap_or(SyncMode::Commit));
    }
    let now = heap.sync_mode();
    match want {
        Some(m) if m != now => Err(Error::Invalid(format!(
            "this session has '{}' open already with sync = \"{}\": the handles of \
             one file share its sync mode; open it with that mode (or without \
             `sync`), or close the other handles first",
            heap.path().display(),
            now.name()
        ))),
        _ => Ok(()),
    }
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
    let heap = heap.heap()?;
    // A forked child's view of the allocator and extents is its parent's
    // at the fork; the parent may have changed the file since.
    if heap.is_forked() {
        return Err(Error::Forked {
            path: heap.path().to_path_buf(),
        }
        .into());
    }
    problems_list(&heap.check())
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

/// Whether `x` is a handle of this session that is still alive: an
/// environment whose `.ptr` binding (not an active one) points to a live
/// handle. `.is_live_handle()` in R/error.R, checked before every call that
/// takes a handle: one call instead of four R-level lookups.
/// @noRd
#[savvy]
fn fmalloc_handle_live(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    let ok = unsafe { handle_in(x.0) }.is_some();
    OwnedLogicalSexp::try_from(ok)?.into()
}

// The handle's operations are free functions, not methods: savvy gives each
// method a closure in every handle's environment, made when the handle is
// (and each of their generators is lazy-loaded by the first open of a
// session), which is most of what a first `fmalloc_open()` costs in R.

/// Drops this handle's reference to the heap (and makes its commits
/// durable; in a forked child nothing is written: the file is the
/// parent's). Idempotent.
/// @noRd
#[savvy]
fn fmalloc_heap_close(heap: &mut FmallocHeap) -> savvy::Result<()> {
    if let Some(heap) = heap.heap.take() {
        if !heap.is_readonly() && !heap.is_forked() {
            heap.sync()?;
        }
    }
    Ok(())
}

/// Drops this handle's reference to the heap, without the sync of
/// `fmalloc_heap_close`: for the handle an unserialized reference opens for
/// a moment (R/serialize.R), whose close must not flush a `sync = "none"`
/// heap.
/// @noRd
#[savvy]
fn fmalloc_heap_release(heap: &mut FmallocHeap) -> savvy::Result<()> {
    heap.heap = None;
    Ok(())
}

/// @noRd
#[savvy]
fn fmalloc_heap_is_closed(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    OwnedLogicalSexp::try_from(heap.heap.is_none())?.into()
}

/// Whether `open` initialised a new heap in the file.
/// @noRd
#[savvy]
fn fmalloc_heap_created(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    OwnedLogicalSexp::try_from(heap.created)?.into()
}

/// @noRd
#[savvy]
fn fmalloc_heap_path(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    OwnedStringSexp::try_from(heap.path.to_string_lossy().as_ref())?.into()
}

/// A named list: path, heap_id, readonly, sync (NA when read-only), size,
/// disk (NA when unknown), used, free, objects.
/// @noRd
#[savvy]
fn fmalloc_heap_info(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    let info = heap.heap()?.info();
    let mut out = OwnedListSexp::new(9, true)?;
    let path = info.path.to_string_lossy();
    out.set_name_and_value(0, "path", OwnedStringSexp::try_from(path.as_ref())?)?;
    out.set_name_and_value(1, "heap_id", OwnedStringSexp::try_from(hex(&info.heap_id))?)?;
    out.set_name_and_value(2, "readonly", OwnedLogicalSexp::try_from(info.readonly)?)?;
    let mut sync = OwnedStringSexp::new(1)?;
    match info.sync {
        Some(m) => sync.set_elt(0, m.name())?,
        None => sync.set_na(0)?,
    }
    out.set_name_and_value(3, "sync", sync)?;
    let numbers = [
        ("size", Some(info.file_bytes)),
        ("disk", info.disk_bytes),
        ("used", Some(info.used_bytes)),
        ("free", Some(info.free_bytes)),
        ("objects", Some(info.objects)),
    ];
    for (i, (name, value)) in numbers.into_iter().enumerate() {
        let value = value.map_or(f64::na(), |v| v as f64);
        out.set_name_and_value(i + 4, name, OwnedRealSexp::try_from(value)?)?;
    }
    out.into()
}

/// The heap's id (hex), as `fmalloc_heap_info()` gives it, without the
/// rest (whose used bytes walk the catalog of a read-only heap: a worker
/// reconnecting each column of a wide data frame did that per column).
/// @noRd
#[savvy]
fn fmalloc_heap_id(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    OwnedStringSexp::try_from(hex(&heap.heap()?.heap_id()))?.into()
}

/// Makes everything written so far durable.
/// @noRd
#[savvy]
fn fmalloc_heap_sync(heap: &FmallocHeap) -> savvy::Result<()> {
    Ok(heap.heap()?.sync()?)
}
