//! Named objects: the savvy functions behind `fmalloc_save()`,
//! `fmalloc_get()`, `fmalloc_ls()`, `fmalloc_rm()`, `fmalloc_rename()`.
//!
//! The R side (R/named.R) splits an object into *leaves* (atomic vectors)
//! and a *meta* blob (the skeleton and the leaves' attributes). This module
//! only moves leaves in and out of the heap's catalog:
//!
//! - save: every leaf becomes one block. A leaf whose data already live in
//!   the heap (an fmalloc ALTREP vector, or a classic vector allocated in the
//!   heap) is named as it is, without a copy; any other leaf is copied into a
//!   fresh block. One atomic `Heap::put` then names all blocks together.
//! - get: one fresh ALTREP vector per block, over the mapped data (O(1) in
//!   the data size), put in place of the placeholders of the skeleton that
//!   R/named.R decoded from the meta blob (`r::named_assemble`).
//!
//! The meta blob is opaque here except for its summary prefix (see
//! `summary_prefix`), which `fmalloc_ls()` reads without touching the rest.

use std::collections::HashSet;

use savvy::{
    savvy, ListSexp, LogicalSexp, OwnedListSexp, OwnedLogicalSexp, OwnedRawSexp, OwnedRealSexp,
    OwnedStringSexp, RawSexp, Sexp, StringSexp,
};

use super::heap_handle::FmallocHeap;
use super::named_assemble::{assemble, Leaves};
use super::named_leaf::{block_of_leaf, copy_leaf_into_heap};
use crate::error::Error;
use crate::heap::{BlockDesc, Entry};

/// Stores `leaves` under `name` with the R layer's `meta`, in one atomic
/// catalog update. R then gets the heap-backed object with
/// `fmalloc_named_assemble()`.
/// @noRd
#[savvy]
fn fmalloc_named_save(
    heap: &FmallocHeap,
    name: &str,
    meta: RawSexp,
    leaves: ListSexp,
    overwrite: bool,
) -> savvy::Result<()> {
    let heap = heap.heap()?;
    // A block belongs to at most one named object: a leaf whose block
    // another object owns (or that appears twice in `x`) is copied.
    let mut taken: HashSet<u64> = heap
        .list()
        .into_iter()
        .filter(|e| !(overwrite && e.name == name))
        .flat_map(|e| e.blocks.into_iter().map(|b| b.offset))
        .collect();
    // Copies made for this call stay alive (and their blocks referenced)
    // until this function returns; if `put` fails they are collected later
    // and their blocks freed, so a failed save leaves no named data behind.
    let mut copies = OwnedListSexp::new(leaves.len(), false)?;
    let mut blocks = Vec::with_capacity(leaves.len());
    for (i, leaf) in leaves.values_iter().enumerate() {
        let desc = match block_of_leaf(&heap, leaf.0) {
            Some(desc) if taken.insert(desc.offset) => desc,
            _ => {
                let (vector, desc) = copy_leaf_into_heap(&heap, leaf)?;
                copies.set_value(i, vector)?;
                desc
            }
        };
        blocks.push(desc);
    }
    heap.put(name, meta.as_slice(), &blocks, overwrite)?;
    drop(copies);
    Ok(())
}

/// The meta blob of the object `name`.
/// @noRd
#[savvy]
fn fmalloc_named_meta(heap: &FmallocHeap, name: &str) -> savvy::Result<Sexp> {
    let entry = heap.heap()?.get(name)?;
    OwnedRawSexp::try_from_slice(&entry.meta)?.into()
}

/// The object `name`: a fresh copy of `skeleton` (from its meta) with leaf
/// `i` -- a new ALTREP vector over block `i`, of type `types[i]`, with the
/// attributes `attrs[[i]]` and the S4 bit `s4[i]` -- in place of each
/// placeholder. No data are read or copied.
///
/// A failure is returned, not raised: a character string (the tagged error
/// message) of class `fmalloc_failure`. Raising would make R/named.R wrap
/// the call in `.rfm()`, whose promise would make the result look shared
/// (see `.fm_assemble()` there).
/// @noRd
#[savvy]
fn fmalloc_named_assemble(
    heap: &FmallocHeap,
    name: &str,
    skeleton: Sexp,
    attrs: ListSexp,
    s4: LogicalSexp,
    types: StringSexp,
) -> savvy::Result<Sexp> {
    let leaves = Leaves {
        attrs,
        s4: s4.to_vec(),
        types: types.to_vec(),
    };
    let result = heap
        .heap()
        .and_then(|heap| Ok((heap.get(name)?, heap)))
        .and_then(|(entry, heap)| assemble(&heap, &entry, skeleton, &leaves));
    match result {
        Ok(obj) => Ok(obj),
        // An R error raised inside: savvy resumes it.
        Err(e @ savvy::Error::Aborted(_)) => Err(e),
        Err(e) => {
            let mut failure = OwnedStringSexp::try_from(e.to_string().as_str())?;
            failure.set_class(["fmalloc_failure"])?;
            failure.into()
        }
    }
}

/// The catalog as columns: name, summary (list of raw), created, modified
/// (seconds since the epoch), bytes (data bytes of all blocks).
/// @noRd
#[savvy]
fn fmalloc_named_list(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    let heap = heap.heap()?;
    let mut entries = heap.list();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let n = entries.len();
    let mut summaries = OwnedListSexp::new(n, false)?;
    for (i, e) in entries.iter().enumerate() {
        summaries.set_value(i, OwnedRawSexp::try_from_slice(summary_prefix(&e.meta))?)?;
    }
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let mut out = OwnedListSexp::new(5, true)?;
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let names = OwnedStringSexp::try_from_slice(&names)?;
    out.set_name_and_value(0, "name", names)?;
    out.set_name_and_value(1, "summary", summaries)?;
    let column = |f: &dyn Fn(&Entry) -> f64| {
        let v: Vec<f64> = entries.iter().map(f).collect();
        OwnedRealSexp::try_from_slice(&v)
    };
    out.set_name_and_value(2, "created", column(&|e| seconds(e.created_ms))?)?;
    out.set_name_and_value(3, "modified", column(&|e| seconds(e.modified_ms))?)?;
    out.set_name_and_value(4, "bytes", column(&|e| data_bytes(&e.blocks) as f64)?)?;
    out.into()
}

/// @noRd
#[savvy]
fn fmalloc_named_exists(heap: &FmallocHeap, name: &str) -> savvy::Result<Sexp> {
    let found = match heap.heap()?.get(name) {
        Ok(_) => true,
        Err(Error::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    OwnedLogicalSexp::try_from(found)?.into()
}

/// @noRd
#[savvy]
fn fmalloc_named_remove(heap: &FmallocHeap, name: &str) -> savvy::Result<()> {
    Ok(heap.heap()?.remove(name)?)
}

/// @noRd
#[savvy]
fn fmalloc_named_rename(
    heap: &FmallocHeap,
    from: &str,
    to: &str,
    overwrite: bool,
) -> savvy::Result<()> {
    Ok(heap.heap()?.rename(from, to, overwrite)?)
}

/// Bytes of data an object holds (what `fmalloc_ls()` reports).
fn data_bytes(blocks: &[BlockDesc]) -> u64 {
    blocks
        .iter()
        .map(|b| b.length.saturating_mul(b.elem.size()))
        .fold(0u64, u64::saturating_add)
}

/// The meta blob up to the end of its summary: magic (4), version (4),
/// summary length n (4, LE), summary (n). A blob too short or with a bad
/// length yields what there is; R/named.R validates it.
fn summary_prefix(meta: &[u8]) -> &[u8] {
    const HEADER: usize = 12;
    let Some(len_bytes) = meta.get(8..HEADER) else {
        return meta;
    };
    let mut le = [0u8; 4];
    le.copy_from_slice(len_bytes);
    let n = u32::from_le_bytes(le) as usize;
    match HEADER.checked_add(n) {
        Some(end) if end <= meta.len() => &meta[..end],
        _ => meta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heap::ElemType;

    #[test]
    fn summary_prefix_is_bounded_by_the_blob() {
        let mut meta = b"RFMN".to_vec();
        meta.extend_from_slice(&1u32.to_le_bytes());
        meta.extend_from_slice(&3u32.to_le_bytes());
        meta.extend_from_slice(b"abcREST");
        assert_eq!(summary_prefix(&meta), &meta[..15]);
        // A hostile length never reads past the end.
        meta[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(summary_prefix(&meta), &meta[..]);
        assert_eq!(summary_prefix(b"RFM"), b"RFM");
    }

    #[test]
    fn data_bytes_counts_element_sizes_and_saturates() {
        let b = |elem, length| BlockDesc {
            offset: 64,
            data_offset: 64,
            elem,
            length,
        };
        assert_eq!(
            data_bytes(&[b(ElemType::Double, 10), b(ElemType::Raw, 3)]),
            83
        );
        assert_eq!(data_bytes(&[b(ElemType::Complex, u64::MAX)]), u64::MAX);
    }
}
