//! Batches and durability: the savvy functions behind `fmalloc_batch()`
//! and `fmalloc_open(sync = )` (R/batch.R). The core does the work
//! (`Heap::begin_batch`, `commit_batch`, `abort_batch`; `set_sync` from
//! `r::api::heap`).

use savvy::savvy;

use crate::r::args::FmallocHeap;

/// @noRd
#[savvy]
fn fmalloc_batch_begin(heap: &FmallocHeap) -> savvy::Result<()> {
    Ok(heap.heap()?.begin_batch()?)
}

/// @noRd
#[savvy]
fn fmalloc_batch_commit(heap: &FmallocHeap) -> savvy::Result<()> {
    Ok(heap.heap()?.commit_batch()?)
}

/// Rolls back everything since the outermost batch began. A closed handle
/// has nothing left to roll back (closed inside the batch): the error that
/// is leaving the batch is the one to see, so this is no error.
/// @noRd
#[savvy]
fn fmalloc_batch_abort(heap: &FmallocHeap) -> savvy::Result<()> {
    if let Some(h) = &heap.heap {
        h.abort_batch();
    }
    Ok(())
}
