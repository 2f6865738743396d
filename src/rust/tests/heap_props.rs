//! Property test: random malloc / write / retain / release / realloc / put /
//! remove / rename / reopen sequences against a shadow model of every block
//! and every name; `check_invariants()` and a full content check after every
//! step.

mod heap_util;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use heap_util::*;
use rfmalloc::error::Error;
use rfmalloc::heap::{BlockDesc, Heap};
use rfmalloc::prng::Rng;

#[derive(Debug, Clone)]
struct Block {
    len: u64,
    fill: u8,
    count: u64,
    named: Option<String>,
}

/// A name's (block offset, data length) list and meta bytes.
type Named = (Vec<(u64, u64)>, Vec<u8>);

#[derive(Default)]
struct Model {
    blocks: HashMap<u64, Block>,
    names: BTreeMap<String, Named>,
}

const NAMES: [&str; 6] = ["a", "b", "c", "long name é", "x", "y"];

impl Model {
    fn unname(&mut self, off: u64) {
        let b = self.blocks.get_mut(&off).unwrap();
        b.named = None;
        if b.count == 0 {
            self.blocks.remove(&off);
        }
    }

    fn pick(&self, rng: &mut Rng, f: impl Fn(&Block) -> bool) -> Option<u64> {
        let mut v: Vec<u64> = self
            .blocks
            .iter()
            .filter(|(_, b)| f(b))
            .map(|(&o, _)| o)
            .collect();
        v.sort_unstable();
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize])
    }
}

fn fill_block(h: &Heap, off: u64, len: u64, fill: u8) {
    write(h, off, &vec![fill; len as usize]);
}

fn verify(h: &Heap, m: &Model) {
    h.check_invariants().unwrap();
    for (&off, b) in &m.blocks {
        assert!(h.block_size(off).unwrap() >= b.len);
        // The core answers who holds a block; nobody rebuilds it.
        assert_eq!(h.holders(off), b.count, "holders of block {off}");
        assert_eq!(h.is_named(off), b.named.is_some(), "name of block {off}");
        assert!(
            read(h, off, b.len).iter().all(|&x| x == b.fill),
            "block {off} changed"
        );
    }
    let list = h.list();
    assert_eq!(list.len(), m.names.len());
    for e in list {
        let (blocks, meta) = &m.names[&e.name];
        assert_eq!(&e.meta, meta);
        let got: Vec<(u64, u64)> = e.blocks.iter().map(|b| (b.offset, b.length)).collect();
        assert_eq!(&got, blocks, "blocks of {}", e.name);
    }
}

fn reopen(path: &Path, h: Heap, m: &mut Model) -> Heap {
    drop(h);
    m.blocks.retain(|_, b| b.named.is_some());
    for b in m.blocks.values_mut() {
        b.count = 0;
    }
    open(path, 256 << 10)
}

fn run(seed: u64, steps: usize) {
    let d = TempDir::new("prop");
    let p = d.file("p.bin");
    let mut h = open(&p, 256 << 10);
    let mut m = Model::default();
    let mut rng = Rng::from_seed(seed);
    for _ in 0..steps {
        match rng.below(21) {
            0..=4 => {
                let len = match rng.below(10) {
                    0 => rng.below(300_000),
                    1 => 0,
                    _ => rng.below(5000),
                };
                let off = h.malloc(len).unwrap();
                let fill = rng.next_u64() as u8;
                fill_block(&h, off, len, fill);
                let b = Block {
                    len,
                    fill,
                    count: 1,
                    named: None,
                };
                assert!(
                    m.blocks.insert(off, b).is_none(),
                    "offset {off} handed out twice"
                );
            }
            5 => {
                if let Some(off) = m.pick(&mut rng, |_| true) {
                    let b = m.blocks.get_mut(&off).unwrap();
                    b.fill = b.fill.wrapping_add(1);
                    fill_block(&h, off, b.len, b.fill);
                }
            }
            6 => {
                if let Some(off) = m.pick(&mut rng, |_| true) {
                    h.retain(off).unwrap();
                    m.blocks.get_mut(&off).unwrap().count += 1;
                }
            }
            7..=9 => {
                if let Some(off) = m.pick(&mut rng, |b| b.count > 0) {
                    h.release(off).unwrap();
                    let b = m.blocks.get_mut(&off).unwrap();
                    b.count -= 1;
                    if b.count == 0 && b.named.is_none() {
                        m.blocks.remove(&off);
                        assert!(h.block_size(off).is_err(), "released block still live");
                    }
                }
            }
            10 => {
                // Realloc by one holder of a block that may have others (a
                // name, more references): the others must see the old
                // bytes, unchanged, at the old offset.
                if let Some(off) = m.pick(&mut rng, |b| b.count > 0) {
                    let old = m.blocks[&off].clone();
                    let len = rng.below(20_000);
                    let new = h.realloc(off, len).unwrap();
                    let keep = old.len.min(len);
                    assert!(read(&h, new, keep).iter().all(|&x| x == old.fill));
                    let shared = old.count > 1 || old.named.is_some();
                    if shared {
                        assert_ne!(new, off, "a shared block was resized in place");
                        m.blocks.get_mut(&off).unwrap().count -= 1;
                    } else {
                        m.blocks.remove(&off);
                    }
                    let fill = rng.next_u64() as u8;
                    fill_block(&h, new, len, fill);
                    let b = Block {
                        len,
                        fill,
                        count: 1,
                        named: None,
                    };
                    assert!(
                        m.blocks.insert(new, b).is_none() || new == off,
                        "realloc returned a block another holder has"
                    );
                }
            }
            11..=14 => {
                let name = NAMES[rng.below(NAMES.len() as u64) as usize];
                let overwrite = rng.below(3) > 0;
                let mut blocks = Vec::new();
                for _ in 0..rng.below(4) {
                    let own = |b: &Block| b.named.is_none() || b.named.as_deref() == Some(name);
                    // Sometimes a block named by another entry (must fail).
                    let f = if rng.below(8) == 0 {
                        m.pick(&mut rng, |_| true)
                    } else {
                        m.pick(&mut rng, own)
                    };
                    if let Some(off) = f {
                        let len = m.blocks[&off].len;
                        blocks.push((off, rng.below(len + 1)));
                    }
                }
                let meta: Vec<u8> = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect();
                let descs: Vec<BlockDesc> = blocks.iter().map(|&(o, l)| raw(o, l)).collect();
                let r = h.put(name, &meta, &descs, overwrite);
                let exists = m.names.contains_key(name);
                let foreign = blocks
                    .iter()
                    .any(|(o, _)| m.blocks[o].named.as_deref().is_some_and(|n| n != name));
                if exists && !overwrite {
                    assert!(matches!(r, Err(Error::Exists { .. })), "{r:?}");
                } else if foreign {
                    assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
                } else {
                    r.unwrap();
                    let offs: Vec<u64> = blocks.iter().map(|b| b.0).collect();
                    if let Some((old, _)) = m.names.remove(name) {
                        for (o, _) in old {
                            if !offs.contains(&o) && m.blocks.contains_key(&o) {
                                m.unname(o);
                            }
                        }
                    }
                    for &o in &offs {
                        m.blocks.get_mut(&o).unwrap().named = Some(name.into());
                    }
                    m.names.insert(name.into(), (blocks, meta));
                }
            }
            15 => {
                let name = NAMES[rng.below(NAMES.len() as u64) as usize];
                match m.names.remove(name) {
                    None => assert!(matches!(h.remove(name), Err(Error::NotFound { .. }))),
                    Some((blocks, _)) => {
                        h.remove(name).unwrap();
                        for (o, _) in blocks {
                            if m.blocks.contains_key(&o) {
                                m.unname(o);
                            }
                        }
                    }
                }
            }
            16 | 17 => {
                let from = NAMES[rng.below(NAMES.len() as u64) as usize];
                let to = NAMES[rng.below(NAMES.len() as u64) as usize];
                let overwrite = rng.below(2) == 0;
                let r = h.rename(from, to, overwrite);
                if !m.names.contains_key(from) {
                    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
                } else if from == to {
                    r.unwrap();
                } else if m.names.contains_key(to) && !overwrite {
                    assert!(matches!(r, Err(Error::Exists { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    if let Some((old, _)) = m.names.remove(to) {
                        for (o, _) in old {
                            if m.blocks.contains_key(&o) {
                                m.unname(o);
                            }
                        }
                    }
                    let e = m.names.remove(from).unwrap();
                    for (o, _) in &e.0 {
                        m.blocks.get_mut(o).unwrap().named = Some(to.into());
                    }
                    m.names.insert(to.into(), e);
                }
            }
            18 => {
                // Several holders on one block, then a holder reallocs
                // while the others keep reading.
                if let Some(off) = m.pick(&mut rng, |b| b.count > 0) {
                    for _ in 0..1 + rng.below(3) {
                        h.retain(off).unwrap();
                        m.blocks.get_mut(&off).unwrap().count += 1;
                    }
                }
            }
            _ => h = reopen(&p, h, &mut m),
        }
        verify(&h, &m);
    }
    let h = reopen(&p, h, &mut m);
    verify(&h, &m);
}

#[test]
fn random_sequences_against_a_shadow_model() {
    let cases: u64 = std::env::var("RFMALLOC_PROP_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let steps = 120;
    for seed in 0..cases {
        run(seed, steps);
    }
    println!(
        "heap property test: {cases} sequences x {steps} steps = {} steps checked",
        cases * steps as u64
    );
}

/// Shared string pools: several vectors (views) over one pool, random
/// writes of short and long strings through any view, naming, removing and
/// renaming, against a model of every element. Every view reads the model's
/// strings after every step; blocks of other objects never change.
fn run_pools(seed: u64, steps: usize) {
    use rfmalloc::pool::{Hold, Pool};
    use rfmalloc::strpool::{self, Encoding};

    let d = TempDir::new("pools");
    let h = open(&d.file("p.bin"), 256 << 10);
    let mut rng = Rng::from_seed(seed);
    // A bystander: a named block whose bytes must never change.
    let bystander = put_bytes(&h, "bystander", 333, 0x5a);
    let n = 1 + rng.below(6);
    let bytes = strpool::block_size(n, 8 + rng.below(64)).unwrap();
    let off = h.malloc(bytes).unwrap();
    let p = h.ptr(off, bytes).unwrap();
    // SAFETY: the fresh block, `bytes` long.
    strpool::init(
        unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), bytes as usize) },
        n,
    )
    .unwrap();
    let mut views = vec![Pool::open(&h, off, bytes, Hold::Adopt).unwrap()];
    let mut model: Vec<Option<Vec<u8>>> = vec![None; n as usize];
    let mut named = false;
    let mut malloc = |h: &Heap, n: u64| h.malloc(n);
    for _ in 0..steps {
        match rng.below(10) {
            0..=4 => {
                let v = &views[rng.below(views.len() as u64) as usize];
                let i = rng.below(n);
                let s = match rng.below(6) {
                    0 => None,
                    1 => Some(vec![b'L'; rng.below(3000) as usize]),
                    _ => Some(vec![b'a' + rng.below(26) as u8; rng.below(12) as usize]),
                };
                v.set(i, s.as_deref().map(|b| (b, Encoding::Native)), &mut malloc)
                    .unwrap();
                model[i as usize] = s;
            }
            5 => {
                // Another vector over the pool's current block.
                let loc = views[0].location();
                let v = Pool::open(&h, loc.block, loc.bytes, Hold::Retain).unwrap();
                assert!(v.same(&views[0]));
                views.push(v);
            }
            6 if views.len() > 1 => {
                views.swap_remove(rng.below(views.len() as u64) as usize);
            }
            7 => {
                if named {
                    h.remove("s").unwrap();
                } else {
                    h.put("s", b"m", &[views[0].desc()], true).unwrap();
                }
                named = !named;
            }
            8 if named => {
                h.rename("s", "t", false).unwrap();
                h.rename("t", "s", false).unwrap();
            }
            _ => {}
        }
        let loc = views[0].location();
        assert_eq!(h.is_named(loc.block), named);
        assert_eq!(h.holders(loc.block), 1, "the pool holds its block once");
        if named {
            assert_eq!(h.get("s").unwrap().blocks[0], views[0].desc());
        }
        for v in &views {
            assert_eq!(v.location(), loc, "a view kept an old location");
            v.read(|buf| {
                let l = strpool::layout(buf).unwrap();
                for (i, want) in model.iter().enumerate() {
                    let got = strpool::get(buf, &l, i as u64)
                        .unwrap()
                        .map(|(b, _)| b.to_vec());
                    assert_eq!(&got, want, "element {i}");
                }
            });
        }
        assert!(read(&h, bystander, 333).iter().all(|&x| x == 0x5a));
        h.check_invariants().unwrap();
    }
    let last = views[0].location().block;
    drop(views);
    assert_eq!(h.holders(last), 0);
    assert_eq!(h.block_size(last).is_ok(), named);
    h.check_invariants().unwrap();
}

#[test]
fn shared_pools_against_a_model() {
    for seed in 0..40 {
        run_pools(seed, 150);
    }
}
