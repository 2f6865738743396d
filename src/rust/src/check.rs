//! A read-only verification of a whole heap file (`fmalloc_check()`).
//!
//! The open stops at the first problem that makes a file unusable and keeps
//! going past damage it can contain (a meta that fails its checksum). The
//! check reads everything it can and reports every problem it finds, each
//! attributed to an object where one is concerned. It reads the file's bytes
//! (the mapping, or an image in memory), never what the open kept in memory,
//! and never writes: where no allocator is in memory (read-only heaps, file
//! images) the allocator walk runs on a rebuild in an [`Overlay`].
//!
//! | part            | what is checked                                            |
//! |-----------------|------------------------------------------------------------|
//! | `file`          | length (a multiple of `FILE_GRANULE`)                      |
//! | `header`        | magic, version, header size, checksum                      |
//! | `slot A`/`B`    | checksum, generation, geometry (a slot never written is    |
//! |                 | fine); a newer slot whose catalog cannot be read           |
//! | `catalog`       | a slot in force; its block's geometry, checksum, structure |
//! | `recovery`      | the heap is (or would be) opened at an older commit        |
//! | `meta`          | per object: block geometry, length, checksum, decoding     |
//! |                 | (`format::meta`), element types against the catalog, the  |
//! |                 | attributes a read refuses (`format::readable`)             |
//! | `summary`       | the catalog's copy of an object's summary: it decodes (as  |
//! |                 | `fmalloc_ls()` decodes it) and equals the meta's summary   |
//! | `block k`       | payload aligned and inside the heap, element range inside  |
//! |                 | the block, a live allocator block of that capacity, no     |
//! |                 | overlap with any other live block                          |
//! | `string pool`   | header (`strpool::layout`) and every element (`get`)       |
//! | `block k`       | a factor's codes: each NA or a level                       |
//! | `allocator`     | `Allocator::check_invariants`; the live blocks tile it     |
//!
//! Every offset, length and count comes from the file and goes through
//! [`bounds`] or [`View::bytes_at`] before it is used.

use std::collections::BTreeMap;
use std::path::Path;

use crate::alloc::{Allocator, ALIGN};
use crate::catalog::StoredEntry;
use crate::error::{Error, Result};
use crate::format::meta::{self, Payload};
use crate::format::readable;
use crate::format::{
    bounds, check_file_len, fnv1a64, read_slots, slot_offset, Header, Slot, HEADER_SIZE, SLOT_SIZE,
};
use crate::heap::{damaged_pages, load_catalog, CatalogError, ElemType, Heap, OpenOptions};
use crate::map::{Mapping, Overlay, View};
use crate::strpool;

/// One problem found by a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The named object concerned; `None` for the heap as a whole.
    pub object: Option<String>,
    /// Which part: "header", "slot A", "catalog", "meta", "block 2", ...
    pub part: String,
    pub problem: String,
}

/// Invalid elements listed per string pool; the rest are counted.
const MAX_LISTED: u64 = 10;

const SLOT_NAMES: [&str; 2] = ["slot A", "slot B"];

/// Where the `recovery` row comes from.
pub(crate) enum Recovery<'a> {
    /// What the open of this heap found (`Heap::recovery`).
    Known(Option<&'a str>),
    /// Worked out from the file, as an open would.
    FromFile,
}

/// Checks the heap file at `path`, opened read-only for the check alone.
/// A file that does not open gives one problem (part "open") with the
/// open's message; only a file locked by a writer is an error.
pub fn check_path(path: &Path) -> Result<Vec<Problem>> {
    let opts = OpenOptions {
        readonly: true,
        ..OpenOptions::default()
    };
    match Heap::open(path, &opts) {
        Ok((heap, _)) => Ok(heap.check()),
        Err(e @ Error::Locked { .. }) => Err(e),
        Err(e) => Ok(vec![Problem {
            object: None,
            part: "open".into(),
            problem: e.to_string(),
        }]),
    }
}

/// Checks a whole heap file held in memory (tests, fuzzing): everything
/// [`Heap::check`] checks, with the allocator rebuilt in an overlay.
pub fn check_image(file: &[u8]) -> Vec<Problem> {
    walk(file, None, Recovery::FromFile)
}

/// A live block of the file and what it belongs to.
struct Live {
    off: u64,
    cap: u64,
    object: Option<String>,
    part: String,
}

impl Live {
    fn describe(&self) -> String {
        match &self.object {
            None => "the catalog".into(),
            Some(name) => format!("{} of '{name}'", self.part),
        }
    }
}

#[derive(Default)]
struct Out(Vec<Problem>);

impl Out {
    fn add(&mut self, object: Option<&str>, part: &str, problem: impl Into<String>) {
        self.0.push(Problem {
            object: object.map(str::to_owned),
            part: part.to_owned(),
            problem: problem.into(),
        });
    }
}

/// The checks, over the file's bytes `v`. `alloc` is the allocator in
/// memory (a writable heap) with the mapping it manages; without one the
/// allocator is rebuilt from the live blocks in an overlay.
pub(crate) fn walk<V: View + ?Sized>(
    v: &V,
    alloc: Option<(&Allocator, &Mapping)>,
    recovery: Recovery<'_>,
) -> Vec<Problem> {
    let mut out = Out::default();
    let len = v.size();
    if let Err(e) = check_file_len(len) {
        out.add(None, "file", e);
    }
    let Some(page) = v.bytes_at(0, HEADER_SIZE) else {
        out.add(None, "header", "the file is too short for a header");
        return out.0;
    };
    if let Err(e) = Header::decode(page) {
        out.add(None, "header", e);
    }
    let Some((slot, entries)) = catalog_in_force(v, page, len, &mut out, recovery) else {
        return out.0;
    };
    let mut live = Vec::new();
    for &(off, cap) in &entries.blocks {
        match geometry(off, cap, slot.heap_len) {
            Ok(()) => live.push(Live {
                off,
                cap,
                object: None,
                part: "catalog".into(),
            }),
            Err(e) => out.add(None, "catalog", format!("its block: {e}")),
        }
    }
    for e in &entries.entries {
        check_entry(v, e, slot.heap_len, &mut live, &mut out);
    }
    let kept = without_overlaps(live, &mut out);
    check_allocator(v, alloc, &kept, &mut out);
    out.0
}

/// Checks both slots and picks the one in force as the open does: the
/// newest valid slot whose catalog reads back. Returns it with its entries,
/// or `None` (reported) when there is none.
fn catalog_in_force<V: View + ?Sized>(
    v: &V,
    page: &[u8],
    len: u64,
    out: &mut Out,
    recovery: Recovery<'_>,
) -> Option<(Slot, crate::heap::Loaded)> {
    let mut candidates = Vec::new();
    let mut why = Vec::new();
    for (i, r) in read_slots(page, len).into_iter().enumerate() {
        match r {
            Ok(s) => candidates.push((i, s)),
            Err(e) => {
                let raw = &page[slot_offset(i)..slot_offset(i) + SLOT_SIZE];
                if raw.iter().all(|&b| b == 0) {
                    // Never written (a heap with a single commit).
                    continue;
                }
                out.add(None, SLOT_NAMES[i], e.clone());
                why.push(format!("{}: {e}", SLOT_NAMES[i]));
            }
        }
    }
    candidates.sort_by_key(|&(_, s)| std::cmp::Reverse(s.generation));
    let mut chosen = None;
    for (i, s) in candidates {
        match load_catalog(v, &s) {
            Ok(entries) => {
                chosen = Some((s, entries));
                break;
            }
            Err(CatalogError::Damaged(e)) => {
                out.add(
                    None,
                    SLOT_NAMES[i],
                    format!("its catalog cannot be read: {e}"),
                );
                // Every other damaged page too (the first is `e`).
                for r in damaged_pages(v, &s).unwrap_or_default().iter().skip(1) {
                    out.add(
                        None,
                        SLOT_NAMES[i],
                        format!(
                            "its catalog cannot be read either: catalog page at {} is damaged \
                             (outside the file, or it fails its checksum)",
                            r.off
                        ),
                    );
                }
                why.push(format!("{}: {e}", SLOT_NAMES[i]));
            }
            Err(CatalogError::Invalid(e)) => {
                out.add(
                    None,
                    "catalog",
                    format!(
                        "the catalog of {} matches its checksum but does not decode: {e}",
                        SLOT_NAMES[i]
                    ),
                );
                return None;
            }
        }
    }
    let Some((slot, entries)) = chosen else {
        out.add(None, "catalog", "no catalog slot can be read");
        return None;
    };
    let lost = match recovery {
        Recovery::Known(why) => why.map(str::to_owned),
        // The message names what the lost commit had: it needs the file
        // in one piece (always so for an image or a read-only mapping).
        Recovery::FromFile => v
            .bytes_at(0, len)
            .and_then(|all| crate::heap::recovery(all, &slot, Some(&entries.entries), &why)),
    };
    if let Some(lost) = lost {
        out.add(None, "recovery", lost);
    }
    Some((slot, entries))
}

/// An allocator block `(off, cap)` of a heap of `heap_len` bytes: a payload
/// offset past the header, aligned, non-empty, inside the heap.
fn geometry(off: u64, cap: u64, heap_len: u64) -> std::result::Result<(), String> {
    if off < HEADER_SIZE || !off.is_multiple_of(ALIGN) || cap == 0 {
        return Err(format!(
            "block at offset {off} (capacity {cap}) is not an allocator block"
        ));
    }
    bounds(off, cap, heap_len)
        .map(drop)
        .map_err(|e| format!("block at offset {off} is not inside the heap: {e}"))
}

/// Checks one catalog entry: its meta and every block it references.
/// Blocks whose geometry holds are added to `live`.
fn check_entry<V: View + ?Sized>(
    v: &V,
    e: &StoredEntry,
    heap_len: u64,
    live: &mut Vec<Live>,
    out: &mut Out,
) {
    let name = Some(e.name.as_str());
    if let Some((off, cap, _)) = e.blocks_at {
        match geometry(off, cap, heap_len) {
            Err(why) => out.add(name, "block list", why),
            Ok(()) => live.push(Live {
                off,
                cap,
                object: Some(e.name.clone()),
                part: "block list".into(),
            }),
        }
    }
    let mut meta_bytes = None;
    if e.meta_off == 0 {
        if e.meta_cap != 0 || e.meta_len != 0 {
            out.add(name, "meta", "a meta length without a meta block");
        } else {
            out.add(
                name,
                "meta",
                "no metadata: Rfmalloc cannot read this object",
            );
        }
    } else {
        match geometry(e.meta_off, e.meta_cap, heap_len) {
            Err(why) => out.add(name, "meta", why),
            Ok(()) => {
                live.push(Live {
                    off: e.meta_off,
                    cap: e.meta_cap,
                    object: Some(e.name.clone()),
                    part: "meta".into(),
                });
                if e.meta_len > e.meta_cap {
                    out.add(
                        name,
                        "meta",
                        format!(
                            "{} bytes of metadata in a block of {}",
                            e.meta_len, e.meta_cap
                        ),
                    );
                } else {
                    match v.bytes_at(e.meta_off, e.meta_len) {
                        None => out.add(name, "meta", "the metadata are not mapped"),
                        Some(b) if fnv1a64(b) != e.meta_sum => {
                            out.add(name, "meta", "the metadata fail their checksum")
                        }
                        Some(b) => meta_bytes = Some(b),
                    }
                }
            }
        }
    }
    // Factors whose codes are in a block: (block index, number of levels);
    // blocks of factor levels.
    let mut factors: Vec<(usize, u64)> = Vec::new();
    let mut level_blocks: Vec<usize> = Vec::new();
    if let Some(b) = meta_bytes {
        match meta::decode(b, e.blocks.len()) {
            Err(why) => out.add(name, "meta", format!("the metadata do not decode: {why}")),
            Ok(m) => {
                // Lengths of the block nodes: elements (a string block's
                // `length` counts bytes; its pool header counts strings).
                let block_len = |i: u32| match e.blocks.get(i as usize) {
                    Some(b) if b.elem == ElemType::String => v
                        .bytes_at(b.data_offset, b.length)
                        .and_then(|pool| strpool::layout(pool).ok())
                        .map_or(0, |l| l.n),
                    Some(b) => b.length,
                    None => 0,
                };
                if let Err(why) = readable::check_object(&m, &block_len) {
                    out.add(name, "meta", format!("the object cannot be read: {why}"));
                }
                for node in &m.nodes {
                    let levels = readable::levels_of(&m, node);
                    match &levels {
                        Some(readable::Levels::Inline(l)) => {
                            if let Some(why) = readable::duplicated_level(readable::elts(l)) {
                                out.add(name, "meta", why);
                            }
                        }
                        Some(readable::Levels::Block(i)) => level_blocks.push(*i as usize),
                        None => {}
                    }
                    if let Some(levels) = levels.map(|l| l.count(&block_len)) {
                        match &node.payload {
                            Payload::Block { index, .. } => factors.push((*index as usize, levels)),
                            Payload::Integer(codes) => {
                                if let Some(why) =
                                    readable::bad_codes(codes.iter().copied(), levels)
                                {
                                    out.add(name, "meta", why);
                                }
                            }
                            _ => {}
                        }
                    }
                    let Payload::Block { index, elem } = node.payload else {
                        continue;
                    };
                    // `decode` checked that the index is in range.
                    if let Some(k) = e.blocks.get(index as usize) {
                        if k.elem != elem {
                            out.add(
                                name,
                                &format!("block {}", index as u64 + 1),
                                format!(
                                    "holds {:?} data but the metadata describe {elem:?} data",
                                    k.elem
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    // The catalog's copy of the summary (what `fmalloc_ls()` shows): the
    // same decoding as the listing, so what it lists as damaged is
    // reported here; and the copy of the meta's summary section it is.
    if let Some(s) = &e.summary {
        match meta::decode_summary_ref(s) {
            Err(why) => out.add(name, "summary", format!("the catalog's summary: {why}")),
            Ok(_) => {
                if let Some(own) = meta_bytes.and_then(meta::summary_section) {
                    if own != s.as_slice() {
                        out.add(
                            name,
                            "summary",
                            "the catalog's summary differs from the metadata's",
                        );
                    }
                }
            }
        }
    }
    // A block may appear twice in one entry (one vector referenced twice),
    // with the same descriptor: else its bytes would be read as two types.
    let mut first: BTreeMap<u64, usize> = BTreeMap::new();
    for (k, b) in e.blocks.iter().enumerate() {
        if let Some(&j) = first.get(&b.offset) {
            let a = &e.blocks[j];
            if (a.elem, a.data_offset, a.length) != (b.elem, b.data_offset, b.length) {
                out.add(
                    name,
                    &format!("block {}", k + 1),
                    format!(
                        "names the block of block {} with another type, offset or length",
                        j + 1
                    ),
                );
            }
        } else {
            first.insert(b.offset, k);
        }
    }
    let mut own: BTreeMap<u64, u64> = BTreeMap::new();
    for (k, b) in e.blocks.iter().enumerate() {
        let part = format!("block {}", k + 1);
        if let Err(why) = geometry(b.offset, b.capacity, heap_len) {
            out.add(name, &part, why);
            continue;
        }
        match own.insert(b.offset, b.capacity) {
            None => live.push(Live {
                off: b.offset,
                cap: b.capacity,
                object: Some(e.name.clone()),
                part: part.clone(),
            }),
            Some(cap) if cap == b.capacity => {}
            Some(cap) => out.add(
                name,
                &part,
                format!(
                    "block at offset {} listed with capacities {cap} and {}",
                    b.offset, b.capacity
                ),
            ),
        }
        let end = b
            .length
            .checked_mul(b.elem.size())
            .and_then(|n| b.data_offset.checked_add(n));
        let block_end = b.offset + b.capacity; // `geometry` bounded it
        let Some(end) = end.filter(|&end| b.data_offset >= b.offset && end <= block_end) else {
            out.add(
                name,
                &part,
                format!(
                    "{} {:?} elements at offset {} exceed the block [{}, {})",
                    b.length, b.elem, b.data_offset, b.offset, block_end
                ),
            );
            continue;
        };
        if b.elem == ElemType::String {
            match v.bytes_at(b.data_offset, end - b.data_offset) {
                Some(pool) => {
                    check_pool(pool, k + 1, name, out);
                    if level_blocks.contains(&k) {
                        check_levels(pool, &part, name, out);
                    }
                }
                None => out.add(name, "string pool", format!("block {}: not mapped", k + 1)),
            }
        }
        if let Some(&(_, levels)) = factors.iter().find(|&&(i, _)| i == k) {
            if b.elem == ElemType::Integer {
                if let Some(data) = v.bytes_at(b.data_offset, end - b.data_offset) {
                    let codes = data
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    if let Some(why) = readable::bad_codes(codes, levels) {
                        out.add(name, &part, why);
                    }
                }
            }
        }
    }
}

/// Reports a repeated level in the string pool of a factor's levels (its
/// damage, if any, `check_pool` reports).
fn check_levels(pool: &[u8], part: &str, name: Option<&str>, out: &mut Out) {
    let Ok(l) = strpool::layout(pool) else { return };
    let levels = (0..l.n).map_while(|i| strpool::get(pool, &l, i).ok());
    if let Some(why) = readable::duplicated_level(levels) {
        out.add(name, part, why);
    }
}

/// Checks the string pool in block `k`: its header and every element.
fn check_pool(pool: &[u8], k: usize, name: Option<&str>, out: &mut Out) {
    let l = match strpool::layout(pool) {
        Ok(l) => l,
        Err(e) => return out.add(name, "string pool", format!("block {k}: {e}")),
    };
    let mut bad = 0u64;
    let mut report = |bad: &mut u64, what: String| {
        *bad += 1;
        if *bad <= MAX_LISTED {
            out.add(name, "string pool", format!("block {k}, {what}"));
        }
    };
    // Pass 1, O(1) per element: each record's span, (start, end, element)
    // for non-empty strings.
    let mut spans: Vec<(usize, usize, u64)> = Vec::new();
    for i in 0..l.n {
        match strpool::get(pool, &l, i) {
            Err(e) => report(&mut bad, format!("element {}: {e}", i + 1)),
            Ok(Some((bytes, _))) if bytes.len() > i32::MAX as usize => report(
                &mut bad,
                format!("element {}: the string is longer than R allows", i + 1),
            ),
            Ok(Some((bytes, _))) if !bytes.is_empty() => {
                let start = bytes.as_ptr() as usize - pool.as_ptr() as usize;
                spans.push((start, start + bytes.len(), i));
            }
            Ok(_) => {}
        }
    }
    // Pass 2: strings that share bytes (a write to one would change the
    // other). Only disjoint strings are scanned for NUL bytes below, so the
    // scan reads each byte of the pool at most once, however the records
    // alias each other.
    spans.sort_unstable();
    let mut shared = vec![false; spans.len()];
    let mut reach: Option<(usize, usize)> = None; // (end, index in spans)
    for (x, &(start, end, i)) in spans.iter().enumerate() {
        if let Some((prev_end, y)) = reach {
            if start < prev_end {
                shared[x] = true;
                shared[y] = true;
                let j = spans[y].2;
                report(
                    &mut bad,
                    format!(
                        "elements {} and {}: their strings share bytes",
                        j + 1,
                        i + 1
                    ),
                );
            }
        }
        if reach.is_none_or(|(e, _)| end > e) {
            reach = Some((end, x));
        }
    }
    // Pass 3: NUL bytes, in disjoint strings only.
    for (x, &(start, end, i)) in spans.iter().enumerate() {
        if !shared[x] && pool[start..end].contains(&0) {
            report(
                &mut bad,
                format!("element {}: the string holds a NUL byte", i + 1),
            );
        }
    }
    if bad > MAX_LISTED {
        out.add(
            name,
            "string pool",
            format!(
                "block {k}: {} more invalid elements (of {})",
                bad - MAX_LISTED,
                l.n
            ),
        );
    }
}

/// Reports every live block that overlaps one before it (in offset order)
/// and returns the others, sorted.
fn without_overlaps(mut live: Vec<Live>, out: &mut Out) -> Vec<Live> {
    live.sort_by_key(|b| b.off);
    let mut kept: Vec<Live> = Vec::with_capacity(live.len());
    for b in live {
        // `kept` is sorted and disjoint: only its last block can reach `b`.
        if let Some(last) = kept.last() {
            if b.off < last.off + last.cap {
                out.add(
                    b.object.as_deref(),
                    &b.part,
                    format!(
                        "block at offset {} overlaps {} (offsets {} to {})",
                        b.off,
                        last.describe(),
                        last.off,
                        last.off + last.cap
                    ),
                );
                continue;
            }
        }
        kept.push(b);
    }
    kept
}

/// The allocator walk, and every live block a live allocator block of the
/// capacity the catalog records.
fn check_allocator<V: View + ?Sized>(
    v: &V,
    alloc: Option<(&Allocator, &Mapping)>,
    kept: &[Live],
    out: &mut Out,
) {
    if let Some((a, map)) = alloc {
        if let Err(e) = a.check_invariants(map) {
            out.add(None, "allocator", e);
        }
        capacities(kept, out, |off| a.usable_size(map, off));
        return;
    }
    let len = v.size();
    let Some(all) = v.bytes_at(0, len) else {
        out.add(None, "allocator", "the heap is not mapped in one piece");
        return;
    };
    let mut overlay = Overlay::new(all);
    let mut a = Allocator::new();
    let pairs: Vec<(u64, u64)> = kept.iter().map(|b| (b.off, b.cap)).collect();
    if let Err(e) = a.add_arena_with_live(&mut overlay, HEADER_SIZE, len, &pairs) {
        out.add(
            None,
            "allocator",
            format!("the live blocks do not fit the heap: {e}"),
        );
        return;
    }
    if let Err(e) = a.check_invariants(&overlay) {
        out.add(None, "allocator", e);
    }
    capacities(kept, out, |off| a.usable_size(&overlay, off));
}

/// Reports every block of `kept` that `usable` (the allocator's usable size
/// of a live block) refuses or gives another capacity than the catalog.
fn capacities(
    kept: &[Live],
    out: &mut Out,
    usable: impl Fn(u64) -> std::result::Result<u64, String>,
) {
    for b in kept {
        match usable(b.off) {
            Err(e) => out.add(
                b.object.as_deref(),
                &b.part,
                format!("not a live allocator block: {e}"),
            ),
            Ok(cap) if cap != b.cap => out.add(
                b.object.as_deref(),
                &b.part,
                format!(
                    "block at offset {} has capacity {cap} in the allocator, {} in the catalog",
                    b.off, b.cap
                ),
            ),
            Ok(_) => {}
        }
    }
}

impl Heap {
    /// Verifies the whole heap file without writing to it (see the module
    /// docs): header, slots, catalog, every object's meta, blocks and string
    /// pools, overlaps, and the allocator (the one in memory for a writable
    /// heap, a rebuild in an overlay for a read-only one). A problem-free
    /// heap gives an empty list. Nothing is committed, nothing written.
    pub fn check(&self) -> Vec<Problem> {
        if let Some((now, mapped)) = self.file_and_mapped_len().filter(|&(n, m)| n < m) {
            return vec![Problem {
                object: None,
                part: "file".into(),
                problem: format!(
                    "the file is {now} bytes, shorter than the {mapped} bytes mapped when it \
                     was opened: it was truncated while open, and nothing was read (reading \
                     past its end would crash R)"
                ),
            }];
        }
        let recovery = Recovery::Known(self.recovery());
        self.with_mapping(|map, alloc| match map.read_view() {
            Some(ro) => walk(&ro, alloc.map(|a| (a, map)), recovery),
            None => walk(map, alloc.map(|a| (a, map)), recovery),
        })
    }
}
