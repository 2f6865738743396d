//! The tree against a `BTreeMap` model, over an in-memory store that
//! checks every page is released exactly once and never read after.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;
use crate::prng::Rng;

/// Blocks of 4 KiB (or the size asked) at increasing offsets.
pub(crate) struct MemStore {
    mem: Vec<u8>,
    live: HashMap<u64, u64>,
    next: u64,
    freed: HashSet<u64>,
    gen: u64,
}

impl MemStore {
    pub(crate) fn new() -> Self {
        MemStore {
            mem: vec![0; 64 << 20],
            live: HashMap::new(),
            next: HEADER_SIZE,
            freed: HashSet::new(),
            gen: 1,
        }
    }
    pub(crate) fn live_count(&self) -> usize {
        self.live.len()
    }
}

impl Store for MemStore {
    fn heap_len(&self) -> u64 {
        self.mem.len() as u64
    }
    fn bytes(&self, off: u64, len: u64) -> Option<&[u8]> {
        // Reading a freed block is a bug of the tree.
        assert!(!self.freed.contains(&off), "read of freed block {off}");
        let r = bounds(off, len, self.mem.len() as u64).ok()?;
        Some(&self.mem[r])
    }
}

impl StoreMut for MemStore {
    fn alloc(&mut self, size: u64) -> R<(u64, u64)> {
        let off = self.next;
        let cap = size.div_ceil(64) * 64;
        self.next += cap;
        self.live.insert(off, cap);
        Ok((off, cap))
    }
    fn write(&mut self, off: u64, data: &[u8]) -> R<()> {
        assert!(self.live.contains_key(&off));
        self.mem[off as usize..off as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn release(&mut self, off: u64) {
        assert!(self.live.remove(&off).is_some(), "double release of {off}");
        self.freed.insert(off);
    }
    fn generation(&self) -> u64 {
        self.gen
    }
}

fn entry_named(name: &str, i: u64, nblocks: usize) -> StoredEntry {
    let blocks: Vec<StoredBlock> = (0..nblocks as u64)
        .map(|k| StoredBlock {
            offset: 1 << 40 | (i * 64 + k) << 6,
            capacity: 64,
            data_offset: 1 << 40 | (i * 64 + k) << 6,
            length: 8,
            elem: ElemType::Double,
        })
        .collect();
    StoredEntry {
        name: name.into(),
        created_ms: i as i64,
        modified_ms: i as i64 + 1,
        meta_off: 0,
        meta_cap: 0,
        meta_len: 0,
        meta_sum: 0,
        data_bytes: StoredEntry::data_bytes_of(&blocks),
        blocks,
        summary: Some(vec![i as u8; (i % 40) as usize]),
        blocks_at: None,
    }
}

fn all(s: &MemStore, root: Option<PageRef>) -> (Vec<StoredEntry>, usize) {
    let mut v = Vec::new();
    let mut pages = 0;
    walk(s, root, &mut |x| {
        match x {
            Visit::Page(r) => {
                pages += 1;
                assert_canonical(s, &r);
            }
            Visit::Leaf(l) => v.push(l.entry(s)?),
        }
        Ok(())
    })
    .unwrap();
    (v, pages)
}

/// A page is exactly what encoding its records gives: what `modify`
/// splices into a page image (a record put or removed, a child reference
/// changed) matches what it writes after decoding the records.
fn assert_canonical(s: &MemStore, r: &PageRef) {
    let p = read_page(s, r, None, UNBOUNDED).unwrap();
    let (again, used) = encode_page(&recs_of(&p), p.level, get_u64(p.b, 16));
    assert_eq!(used, get_u32(p.b, 12) as usize);
    assert!(again == p.b, "page at {} is not canonical", r.off);
}

#[test]
fn random_operations_match_a_model() {
    for seed in 1..=6u64 {
        let mut rng = Rng::from_seed(seed);
        let mut s = MemStore::new();
        let mut root = None;
        let mut model: BTreeMap<String, StoredEntry> = BTreeMap::new();
        let names = 40 + 200 * (seed as usize % 3);
        for step in 0..1500u64 {
            let name = format!(
                "obj{:05}{}",
                rng.below(names as u64),
                "x".repeat((step % 7) as usize * 30)
            );
            let name = if rng.below(4) == 0 {
                name[..6].to_string()
            } else {
                name
            };
            match rng.below(3) {
                0 | 1 => {
                    let e = entry_named(&name, step, (rng.below(9)) as usize);
                    let (r, old) = insert(&mut s, root, &e).unwrap();
                    root = r;
                    assert_eq!(old, model.insert(name.clone(), e));
                }
                _ => {
                    let (r, old) = remove(&mut s, root, &name).unwrap();
                    root = r;
                    assert_eq!(old, model.remove(&name));
                }
            }
            if step % 97 == 0 || step == 1499 {
                let (v, pages) = all(&s, root);
                assert_eq!(v, model.values().cloned().collect::<Vec<_>>());
                // Every live block is a page of the tree: nothing leaks.
                assert_eq!(pages, s.live_count(), "seed {seed} step {step}");
                for (k, e) in model.iter().take(5) {
                    assert_eq!(get(&s, root, k).unwrap().as_ref(), Some(e));
                }
                assert!(get(&s, root, "zzz-missing").unwrap().is_none());
            }
        }
        // Remove everything: the tree is empty and holds no page.
        let names: Vec<String> = model.keys().cloned().collect();
        for n in names {
            root = remove(&mut s, root, &n).unwrap().0;
        }
        assert!(root.is_none());
        assert_eq!(s.live_count(), 0);
    }
}

#[test]
fn build_matches_inserts_and_deep_trees_work() {
    let mut s = MemStore::new();
    let entries: Vec<StoredEntry> = (0..5000u64)
        .map(|i| entry_named(&format!("n{i:06}"), i, (i % 3) as usize))
        .collect();
    let root = build(&mut s, &entries).unwrap();
    let (v, _) = all(&s, root);
    assert_eq!(v, entries);
    assert_eq!(get(&s, root, "n004321").unwrap().unwrap(), entries[4321]);
    assert!(
        read_page(&s, &root.unwrap(), None, UNBOUNDED)
            .unwrap()
            .level
            >= 2
    );
}

#[test]
fn every_byte_flip_of_a_page_is_caught() {
    let mut s = MemStore::new();
    let entries: Vec<StoredEntry> = (0..40u64)
        .map(|i| entry_named(&format!("n{i:03}"), i, 2))
        .collect();
    let root = build(&mut s, &entries).unwrap().unwrap();
    for at in 0..PAGE_SIZE as u64 {
        let i = (root.off + at) as usize;
        s.mem[i] ^= 0x20;
        assert!(matches!(
            get(&s, Some(root), "n001"),
            Err(TreeError::Damaged(_))
        ));
        s.mem[i] ^= 0x20;
    }
}

/// A page re-signed after an edit: only the structural checks apply.
fn resigned(s: &mut MemStore, r: &PageRef, edit: impl Fn(&mut [u8])) -> PageRef {
    let at = r.off as usize;
    edit(&mut s.mem[at..at + PAGE_SIZE]);
    PageRef {
        sum: page_sum(&s.mem[at..at + PAGE_SIZE]),
        ..*r
    }
}

#[test]
fn hostile_pages_are_invalid_not_panics() {
    let entries: Vec<StoredEntry> = (0..60u64)
        .map(|i| entry_named(&format!("n{i:03}"), i, (i % 9) as usize))
        .collect();
    type Edit = Box<dyn Fn(&mut [u8])>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "count",
            Box::new(|p| p[10..12].copy_from_slice(&u16::MAX.to_le_bytes())),
        ),
        ("used", Box::new(|p| put_u32(p, 12, u32::MAX))),
        ("level", Box::new(|p| p[9] = 200)),
        ("kind", Box::new(|p| p[8] = 9)),
        ("name len", Box::new(|p| p[32] = 0xff)),
        ("order", Box::new(|p| p[LEAF_FIXED + 32 + 1] = b'z')),
        ("blocks", Box::new(|p| put_u32(p, 32 + 4, u32::MAX))),
        (
            "summary",
            Box::new(|p| p[34..36].copy_from_slice(&4000u16.to_le_bytes())),
        ),
        ("child", Box::new(|p| put_u64(p, 32 + 8, 3))),
    ];
    for (what, edit) in edits {
        let mut s = MemStore::new();
        let root = build(&mut s, &entries).unwrap().unwrap();
        // Edit the first leaf (or the root, for a branch edit).
        let target = if what == "child" {
            root
        } else {
            let p = read_page(&s, &root, None, UNBOUNDED).unwrap();
            if p.leaf {
                root
            } else {
                p.child(0)
            }
        };
        let fixed = resigned(&mut s, &target, edit);
        let r = if target == root {
            Some(fixed)
        } else {
            let mut w = MemStore::new();
            std::mem::swap(&mut w.mem, &mut s.mem);
            // Point the root at the edited page by rewriting its first child.
            let at = root.off as usize + 32;
            put_u64(&mut w.mem[at..], 24, fixed.sum);
            let rs = page_sum(&w.mem[root.off as usize..root.off as usize + PAGE_SIZE]);
            s = w;
            Some(PageRef { sum: rs, ..root })
        };
        let mut n = 0;
        let res = walk(&s, r, &mut |v| {
            if let Visit::Leaf(l) = v {
                l.entry(&s)?;
                n += 1;
            }
            Ok(())
        });
        assert!(
            matches!(res, Err(TreeError::Invalid(_))),
            "{what}: {:?}",
            res.map(|()| n)
        );
    }
}
