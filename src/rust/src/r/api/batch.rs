//! Batches: the savvy functions behind `fmalloc_batch()` (R/batch.R). The
//! core does the work (`Heap::begin_batch`, `commit_batch`, `abort_batch`).

use savvy::savvy;

use crate::error::Error;
use crate::heap::Heap;
use crate::r::args::FmallocHeap;

/// An open batch: the heap it began on, so that it ends there (committed
/// or rolled back) whatever happens to the handle meanwhile. The handles
/// of one file share one heap and its batch: when the batch's handle was
/// closed inside the batch while another handle stayed open, the handle
/// could no longer end it, and the heap stayed in the batch for good (no
/// later save of the session was committed).
/// @noRd
#[savvy]
pub struct FmallocBatch {
    /// Taken when the batch ends (the heap clone goes at once).
    heap: Option<Heap>,
}

/// @noRd
#[savvy]
fn fmalloc_batch_begin(heap: &FmallocHeap) -> savvy::Result<FmallocBatch> {
    let h = heap.heap()?;
    h.begin_batch()?;
    Ok(FmallocBatch { heap: Some(h) })
}

/// Ends the batch with a commit (the outermost batch commits). If `heap`,
/// the handle it began on, was closed inside it, the batch is rolled back
/// instead and the error is `fmalloc_closed`: closing the handle ends its
/// batch, as when no other handle keeps the heap open.
/// @noRd
#[savvy]
fn fmalloc_batch_commit(batch: &mut FmallocBatch, heap: &FmallocHeap) -> savvy::Result<()> {
    let Some(h) = batch.heap.take() else {
        return Err(Error::Invalid("this batch has ended".into()).into());
    };
    if heap.heap.is_none() {
        h.abort_batch();
        return Err(Error::Closed {
            path: heap.path.clone(),
        }
        .into());
    }
    Ok(h.commit_batch()?)
}

/// Rolls back everything since the outermost batch began (a no-op when the
/// batch has ended).
/// @noRd
#[savvy]
fn fmalloc_batch_abort(batch: &mut FmallocBatch) -> savvy::Result<()> {
    if let Some(h) = batch.heap.take() {
        h.abort_batch();
    }
    Ok(())
}
