//! Named objects: the savvy functions behind `fmalloc_save()`,
//! `fmalloc_get()`, `fmalloc_ls()`, `fmalloc_rm()`, `fmalloc_rename()`.
//!
//! The R side (R/named.R) checks an object and describes it as a flat list
//! of nodes whose atomic vectors of length > 0 are *leaves*. This module
//! stores and rebuilds it:
//!
//! - save: every leaf becomes one block. A leaf whose data already live in
//!   the heap (an fmalloc ALTREP vector, or a classic vector allocated in the
//!   heap) is named as it is, without a copy; any other leaf is copied into a
//!   fresh block. The description becomes a meta blob (v2, `format::meta`,
//!   encoded in `r::named::meta`) and one atomic `Heap::put` names all blocks
//!   together with it.
//! - get: the meta is decoded in Rust and the object built directly, with one
//!   fresh ALTREP vector per block (O(1) in the data size;
//!   `r::named::assemble`). No meta byte ever reaches R's `unserialize()`.
//! - ls: the summary section of each meta, decoded in Rust.

use std::collections::HashSet;

use savvy::{savvy, ListSexp, OwnedListSexp, OwnedLogicalSexp, OwnedRawSexp, RawSexp, Sexp};

use crate::error::Error;
use crate::format::meta::Payload;
use crate::format::readable::{self, check_object};
use crate::heap::ElemType;
use crate::heap::Heap;
use crate::r::args::{heap_of, FmallocHeap};
use crate::r::error::returned_form;
use crate::r::ffi::SEXP;
use crate::r::named::assemble::assemble;
use crate::r::named::leaf::{block_of_leaf, copy_leaf_into_heap, data_pointer};
use crate::r::named::listing::ls_columns;
use crate::r::named::meta::encode_meta;
use crate::r::types::char_elt;

/// Stores `leaves` under `name` with the meta encoded from `desc` (the flat
/// description `.fm_decompose()` makes), in one atomic catalog update.
/// `fmalloc_set_attr()` (and `create_fmalloc_vector(name =)`) save through
/// this; `fmalloc_save()` through [`fmalloc_named_store`].
/// @noRd
#[savvy]
fn fmalloc_named_save(
    heap: &FmallocHeap,
    name: &str,
    desc: ListSexp,
    leaves: ListSexp,
    overwrite: bool,
) -> savvy::Result<()> {
    save(&heap.heap()?, name, &desc, &leaves, overwrite)
}

/// `fmalloc_save()` in one call: sets the progress of long copies
/// (`progress`, `after_secs`, `chunk_bytes`: see `r::named::progress::enable`),
/// saves as [`fmalloc_named_save`] does and returns the heap-backed object
/// `fmalloc_named_get()` would return. `heap` is the handle R/named.R has
/// checked (resolved again here, as every call into Rust does).
///
/// Saving many small objects is R-bound: one call instead of three (and
/// no `.rfm()` wrapper) is most of what a save of a small vector costs in
/// R. Errors take the returned form (`r::error::returned_form`), as for
/// `fmalloc_named_get()`, so that the result is not made shared by a
/// wrapper's promise.
/// @noRd
#[savvy]
#[allow(clippy::too_many_arguments)]
fn fmalloc_named_store(
    heap: Sexp,
    name: &str,
    desc: ListSexp,
    leaves: ListSexp,
    overwrite: bool,
    progress: bool,
    after_secs: f64,
    chunk_bytes: f64,
) -> savvy::Result<Sexp> {
    returned_form((|| {
        // SAFETY: heap is a SEXP R passed in.
        let heap = unsafe { heap_of(heap.0) }?;
        crate::r::named::progress::enable(progress, after_secs, chunk_bytes);
        save(&heap, name, &desc, &leaves, overwrite)?;
        assemble(&heap, &heap.get(name)?)
    })())
}

/// Stores `leaves` under `name` with the meta encoded from `desc`.
fn save(
    heap: &Heap,
    name: &str,
    desc: &ListSexp,
    leaves: &ListSexp,
    overwrite: bool,
) -> savvy::Result<()> {
    // A block belongs to at most one named object: a leaf whose block
    // another object owns (the core knows which blocks are named) or that
    // appears twice in `x` is copied. With `overwrite`, the blocks `name`
    // holds now may be kept.
    let own: HashSet<u64> = if overwrite {
        match heap.get(name) {
            Ok(e) => e.blocks.iter().map(|b| b.offset).collect(),
            Err(_) => HashSet::new(),
        }
    } else {
        HashSet::new()
    };
    let mut taken: HashSet<u64> = HashSet::new();
    // Copies made for this call stay alive (and their blocks referenced)
    // until this function returns; if `put` fails they are collected later
    // and their blocks freed, so a failed save leaves no named data behind.
    let mut copies = OwnedListSexp::new(leaves.len(), false)?;
    let mut blocks = Vec::with_capacity(leaves.len());
    for (i, leaf) in leaves.values_iter().enumerate() {
        let desc = match block_of_leaf(heap, leaf.0) {
            Some(desc)
                if (own.contains(&desc.offset) || !heap.is_named(desc.offset))
                    && taken.insert(desc.offset) =>
            {
                desc
            }
            _ => {
                let (vector, desc) = copy_leaf_into_heap(heap, leaf)?;
                copies.set_value(i, vector)?;
                desc
            }
        };
        blocks.push(desc);
    }
    let (meta, decoded) = encode_meta(desc, &blocks)?;
    // What a read of it would refuse is refused before anything is written.
    let leaf: Vec<_> = leaves.values_iter().map(|l| l.0).collect();
    // SAFETY: header reads of vectors R passed in (`leaves` holds them).
    let lengths: Vec<u64> = leaf
        .iter()
        .map(|&l| unsafe { crate::r::ffi::XLENGTH(l) } as u64)
        .collect();
    let block_len = |i: u32| lengths.get(i as usize).copied().unwrap_or(0);
    let refuse = |why: String| -> savvy::Error {
        Error::Invalid(format!(
            "cannot save '{name}': {why}, which R's methods for its class fail on; nothing was written"
        ))
        .into()
    };
    check_object(&decoded, &block_len).map_err(refuse)?;
    for node in &decoded.nodes {
        let Some(levels) = readable::levels_of(&decoded, node) else {
            continue;
        };
        let dup = match &levels {
            readable::Levels::Inline(l) => readable::duplicated_level(readable::elts(l)),
            &readable::Levels::Block(i) => match leaf.get(i as usize) {
                Some(&l) => {
                    let p = data_pointer(l, ElemType::String)? as *const SEXP;
                    // SAFETY: `l` is a character vector of `block_len(i)`
                    // elements (CHARSXPs at `p`) that `leaves` keeps alive
                    // for the call.
                    let chars = unsafe { std::slice::from_raw_parts(p, block_len(i) as usize) };
                    readable::duplicated_level(chars.iter().map(|&c| char_elt(c)))
                }
                None => None,
            },
        };
        if let Some(why) = dup {
            return Err(refuse(why));
        }
        let levels = levels.count(&block_len);
        let why = match &node.payload {
            Payload::Integer(codes) => readable::bad_codes(codes.iter().copied(), levels),
            Payload::Block {
                index,
                elem: ElemType::Integer,
            } => match (leaf.get(*index as usize), block_len(*index)) {
                (Some(&l), n) if n > 0 => {
                    let p = data_pointer(l, ElemType::Integer)? as *const i32;
                    // SAFETY: `l` is an integer vector of `n` elements that
                    // `leaves` keeps alive for the call; its data pointer is
                    // read-only use here.
                    let codes = unsafe { std::slice::from_raw_parts(p, n as usize) };
                    readable::bad_codes(codes.iter().copied(), levels)
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(why) = why {
            return Err(refuse(why));
        }
    }
    heap.put(name, &meta, &blocks, overwrite)?;
    drop(copies);
    Ok(())
}

/// Test hook: the raw meta bytes of `name` (R never decodes them).
/// @noRd
#[savvy]
fn fmalloc_named_raw_meta(heap: &FmallocHeap, name: &str) -> savvy::Result<Sexp> {
    let entry = heap.heap()?.get(name)?;
    OwnedRawSexp::try_from_slice(&entry.meta)?.into()
}

/// Test hook: replaces the meta of `name` with raw bytes (keeping its
/// blocks), or creates `name` with no blocks. How tests put hostile metas
/// into a heap.
/// @noRd
#[savvy]
fn fmalloc_named_put_raw_meta(heap: &FmallocHeap, name: &str, meta: RawSexp) -> savvy::Result<()> {
    let heap = heap.heap()?;
    let blocks = match heap.get(name) {
        Ok(e) => e.blocks,
        Err(Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    Ok(heap.put(name, meta.as_slice(), &blocks, true)?)
}

/// The object `name`, built from its meta: every vector a fresh ALTREP
/// vector over its block. No data are read or copied.
///
/// Errors take the returned form (`r::error::returned_form`: a string of class
/// `fmalloc_failure`): raising would make R/named.R wrap the call in
/// `.rfm()`, whose promise would make the result look shared (see
/// `.fm_assemble()` there). `heap` is the handle R/named.R has checked
/// (resolved again here, as every call into Rust does): called with
/// `.Call()`, without the generated wrapper's second R-level check.
/// @noRd
#[savvy]
fn fmalloc_named_get(heap: Sexp, name: &str) -> savvy::Result<Sexp> {
    returned_form((|| {
        // SAFETY: heap is a SEXP R passed in.
        let heap = unsafe { heap_of(heap.0) }?;
        assemble(&heap, &heap.get(name)?)
    })())
}

/// The catalog as a named list of columns, in `fmalloc_ls()`'s order:
/// name, type, class, length, dim (from the summary each catalog entry
/// keeps: no meta is decoded; NA for a summary that cannot be read), bytes
/// (data bytes of all blocks), created, modified (seconds since the epoch),
/// status (`r::named::listing`). When damaged catalog pages were skipped,
/// the list has attribute `damaged`: what they hide (`heap::Unlisted`),
/// which `fmalloc_ls()` gives as a warning.
/// @noRd
#[savvy]
fn fmalloc_named_list(heap: &FmallocHeap) -> savvy::Result<Sexp> {
    let l = heap.heap()?.summaries()?;
    let damaged = l.unlisted.as_ref().map(|u| u.message());
    ls_columns(&l.rows, damaged.as_deref())
}

/// @noRd
#[savvy]
fn fmalloc_named_exists(heap: &FmallocHeap, name: &str) -> savvy::Result<Sexp> {
    OwnedLogicalSexp::try_from(heap.heap()?.contains(name)?)?.into()
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
