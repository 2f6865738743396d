//! The catalog v2 tree (`catalog::tree`) on hostile pages and random edits.
//! Must never panic, loop or allocate more than the input justifies.
//!
//! Input: first byte selects the mode. Even: the rest is a heap area image
//! whose first 4 KiB are the root page (its checksum is made to match, so
//! the fuzzer explores the structure); it is walked and searched. Odd: the
//! rest is a list of actions (insert or remove one of 64 names, with 0..=12
//! blocks) on a tree in memory, checked against a `BTreeMap` model.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rfmalloc::catalog::tree::{self, PageRef, Store, StoreMut, TreeError, Visit};
use rfmalloc::catalog::{StoredBlock, StoredEntry};
use rfmalloc::format::{ElemType, HEADER_SIZE};

/// The input as the heap area from HEADER_SIZE on (read-only).
struct Image<'a>(&'a [u8]);

impl Store for Image<'_> {
    fn heap_len(&self) -> u64 {
        HEADER_SIZE + self.0.len() as u64
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(off.checked_sub(HEADER_SIZE)?).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.0.get(start..end)
    }
}

/// A bump allocator over memory, for the action mode.
struct Mem {
    mem: Vec<u8>,
    next: u64,
}

impl Store for Mem {
    fn heap_len(&self) -> u64 {
        HEADER_SIZE + self.mem.len() as u64
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        let start = (off.checked_sub(HEADER_SIZE)?) as usize;
        self.mem.get(start..start.checked_add(len as usize)?)
    }
}

impl StoreMut for Mem {
    fn alloc(&mut self, size: u64) -> Result<(u64, u64), TreeError> {
        let cap = size.div_ceil(64) * 64;
        let off = self.next;
        self.next += cap;
        let end = (self.next - HEADER_SIZE) as usize;
        if end > self.mem.len() {
            self.mem.resize(end, 0);
        }
        Ok((off, cap))
    }
    fn write(&mut self, off: u64, data: &[u8]) -> Result<(), TreeError> {
        let at = (off - HEADER_SIZE) as usize;
        self.mem[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn release(&mut self, _off: u64) {}
    fn generation(&self) -> u64 {
        1
    }
}

fn entry(k: u8, nblocks: usize) -> StoredEntry {
    let blocks: Vec<StoredBlock> = (0..nblocks as u64)
        .map(|i| StoredBlock {
            offset: 1 << 30 | i << 6,
            capacity: 64,
            data_offset: 1 << 30 | i << 6,
            length: 8,
            elem: ElemType::Double,
        })
        .collect();
    StoredEntry {
        name: format!("name{k:02}{}", "x".repeat(usize::from(k) * 3)),
        created_ms: i64::from(k),
        modified_ms: 0,
        meta_off: 0,
        meta_cap: 0,
        meta_len: 0,
        meta_sum: 0,
        data_bytes: StoredEntry::data_bytes_of(&blocks),
        blocks,
        summary: Some(vec![k; usize::from(k)]),
        blocks_at: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // Short inputs are padded with zeros to a whole page.
        let mut owned;
        let rest = if rest.len() < tree::PAGE_SIZE {
            owned = rest.to_vec();
            owned.resize(tree::PAGE_SIZE, 0);
            &owned[..]
        } else {
            rest
        };
        let img = Image(rest);
        let root = PageRef {
            off: HEADER_SIZE,
            cap: tree::PAGE_SIZE as u64,
            sum: tree::page_sum(&rest[..tree::PAGE_SIZE]),
        };
        let mut names = Vec::new();
        let _ = tree::walk(&img, Some(root), &mut |v| {
            if let Visit::Leaf(l) = v {
                let _ = l.entry(&img);
                names.push(l.listed().name);
            }
            Ok(())
        });
        for n in names.iter().take(16) {
            let _ = tree::get(&img, Some(root), n);
        }
        let _ = tree::get(&img, Some(root), "alpha");
        let _ = tree::debug_leaf_entries(&rest[..tree::PAGE_SIZE]);
        return;
    }
    let mut mem = Mem {
        mem: Vec::new(),
        next: HEADER_SIZE,
    };
    let mut root = None;
    let mut model: BTreeMap<String, StoredEntry> = BTreeMap::new();
    for pair in rest.chunks(2).take(400) {
        let k = pair[0] & 63;
        let nblocks = usize::from(pair.get(1).copied().unwrap_or(0) % 9);
        if pair[0] & 64 == 0 {
            let e = entry(k, nblocks);
            let (r, old) = tree::insert(&mut mem, root, &e).unwrap();
            root = r;
            assert_eq!(old, model.insert(e.name.clone(), e));
        } else {
            let name = entry(k, 0).name;
            let (r, old) = tree::remove(&mut mem, root, &name).unwrap();
            root = r;
            assert_eq!(old, model.remove(&name));
        }
    }
    let mut got = Vec::new();
    tree::walk(&mem, root, &mut |v| {
        if let Visit::Leaf(l) = v {
            got.push(l.entry(&mem)?);
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(got, model.into_values().collect::<Vec<_>>());
});
