//! Who in this R session keeps a heap file open: its open heap handles and
//! the vectors made from it. For `fmalloc_close()` (which says when vectors
//! still hold the file) and for the lock error of an open that conflicts
//! with this session's own use of the file. Also what the file takes on
//! disk, for the heap's `print()` and `summary()`.

use std::path::Path;

use savvy::{savvy, OwnedListSexp, OwnedLogicalSexp, OwnedRealSexp, Sexp};

use crate::error::Error;
use crate::heap::Heap;
use crate::r::args::open_handles_on;

/// "3 vectors made from it are", "1 vector made from it is"; objects when
/// nothing holds a block (a heap kept alive by something else).
fn vectors_phrase(n: u64) -> String {
    match n {
        0 => "objects made from it are".into(),
        1 => "1 vector made from it is".into(),
        n => format!("{n} vectors made from it are"),
    }
}

/// The lock error of an open that conflicts with this session's own use of
/// the file, rewritten to say which use and what to do. Other errors (and a
/// conflict with another process) pass through.
pub(crate) fn explain_conflict(e: Error, readonly_wanted: bool) -> Error {
    let Error::Locked { path, detail } = e else {
        return e;
    };
    let Some(heap) = Heap::open_in_process(&path) else {
        return Error::Locked { path, detail };
    };
    let detail = session_detail(
        heap.is_readonly(),
        readonly_wanted,
        open_handles_on(&heap),
        heap.session_refs(),
    );
    Error::Locked { path, detail }
}

fn session_detail(open_readonly: bool, readonly_wanted: bool, handles: usize, refs: u64) -> String {
    let mode = if open_readonly {
        "read-only"
    } else {
        "for writing"
    };
    let vectors = vectors_phrase(refs);
    match (handles > 0, open_readonly || !readonly_wanted) {
        (true, true) => format!(
            "this R session has it open read-only through a heap handle that is still \
             open; fmalloc_close() that handle{}, then open it for writing",
            if refs > 0 {
                format!(" and rm() the {refs} vector(s) made from it")
            } else {
                String::new()
            }
        ),
        (true, false) => "this R session has it open for writing through a heap handle \
             that is still open: use that handle, which can also read (or fmalloc_close() \
             it first)"
            .into(),
        (false, true) => format!(
            "this R session closed its heap handle, but {vectors} still alive, holding \
             the file open {mode}; rm() them (or let them go out of scope) and run gc(), \
             then open it for writing"
        ),
        (false, false) => format!(
            "this R session closed its heap handle, but {vectors} still alive, holding \
             the file open {mode}; open it without readonly = TRUE to keep using it, or \
             rm() them and run gc() first"
        ),
    }
}

/// What keeps the heap file at `path` open in this session: NULL when
/// nothing does, else a list of `readonly`, `handles` (open heap handles)
/// and `vectors` (session references to its blocks).
/// @noRd
#[savvy]
fn fmalloc_path_holders(path: &str) -> savvy::Result<Sexp> {
    let Some(heap) = Heap::open_in_process(Path::new(path)) else {
        return savvy::NullSexp.into();
    };
    let mut out = OwnedListSexp::new(3, true)?;
    out.set_name_and_value(
        0,
        "readonly",
        OwnedLogicalSexp::try_from(heap.is_readonly())?,
    )?;
    let handles = open_handles_on(&heap) as f64;
    out.set_name_and_value(1, "handles", OwnedRealSexp::try_from(handles)?)?;
    let refs = heap.session_refs() as f64;
    out.set_name_and_value(2, "vectors", OwnedRealSexp::try_from(refs)?)?;
    out.into()
}

/// Whether this session has the heap file at `path` open for writing (a
/// reference reconnects to that heap instead of trying a read-only open,
/// whose lock error costs more than the reconnect).
/// @noRd
#[savvy]
fn fmalloc_path_open_writable(path: &str) -> savvy::Result<Sexp> {
    let writable = Heap::open_in_process(Path::new(path)).is_some_and(|h| !h.is_readonly());
    OwnedLogicalSexp::try_from(writable)?.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_handle_is_never_called_open() {
        for ro in [true, false] {
            for want in [true, false] {
                let m = session_detail(ro, want, 0, 3);
                assert!(m.contains("closed its heap handle"), "{m}");
                assert!(m.contains("3 vectors made from it are still alive"), "{m}");
                assert!(!m.contains("use that handle"), "{m}");
            }
        }
        let m = session_detail(false, true, 1, 0);
        assert!(m.contains("use that handle"), "{m}");
        let m = session_detail(true, false, 1, 2);
        assert!(
            m.contains("fmalloc_close() that handle and rm() the 2"),
            "{m}"
        );
        assert!(session_detail(true, false, 0, 1).contains("1 vector made from it is"));
    }
}
