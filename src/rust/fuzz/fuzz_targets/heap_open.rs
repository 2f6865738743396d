//! Opens mutated heap files, read-only and writable. Must never panic; a
//! rejected file must be `Error::Corrupt` and byte-for-byte unchanged; an
//! accepted file must pass `check_invariants()`. `check_image` and
//! `Heap::check` run on every input too: they must never panic.
//!
//! Input: first byte selects the mode. Even: the rest of the input is the
//! whole file. Odd: the rest is a list of 5-byte edits (u32 little-endian
//! position, xor byte) applied to a valid seed heap with a few named objects;
//! positions below 2^31 land in the first 64 KiB (header, catalog, meta).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rfmalloc::error::Error;
use rfmalloc::heap::{BlockDesc, ElemType, Heap, OpenOptions};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rfm-fuzz-{}-{name}", std::process::id()))
}

fn seed() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        let p = temp("seed.bin");
        let _ = std::fs::remove_file(&p);
        let opts = OpenOptions {
            readonly: false,
            initial_size: Some(256 << 10),
            recover: false,
        };
        {
            let (h, _) = Heap::open(&p, &opts).unwrap();
            for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
                let off = h.malloc(100 * (i as u64 + 1)).unwrap();
                let block = BlockDesc {
                    offset: off,
                    data_offset: off,
                    elem: ElemType::Integer,
                    length: 25,
                };
                h.put(name, name.as_bytes(), &[block], false).unwrap();
                h.release(off).unwrap();
            }
            h.put("meta_only", b"m", &[], false).unwrap();
            h.rename("beta", "beta2", false).unwrap();
        }
        let bytes = std::fs::read(&p).unwrap();
        let _ = std::fs::remove_file(&p);
        bytes
    })
}

fn probe(file: &PathBuf, bytes: &[u8]) {
    // A writable open refused for a damaged durable commit (`Damaged`) is
    // tried again with `recover`, as a user told so would.
    for (readonly, recover) in [(true, false), (false, false), (false, true)] {
        std::fs::write(file, bytes).unwrap();
        let opts = OpenOptions {
            readonly,
            initial_size: Some(64 << 10),
            recover,
        };
        match Heap::open(file, &opts) {
            Ok((h, _)) => {
                h.check_invariants().unwrap();
                let _ = h.check();
                for e in h.list() {
                    // A damaged object (meta failing its checksum) is listed
                    // but cannot be got; every other one can.
                    if e.damaged.is_some() {
                        assert!(matches!(h.get(&e.name), Err(Error::Corrupt { .. })));
                        continue;
                    }
                    let got = h.get(&e.name).unwrap();
                    for b in got.blocks {
                        h.ptr(b.data_offset, b.length * b.elem.size()).unwrap();
                    }
                }
            }
            Err(e) => {
                // An empty file is created by a writable open, refused
                // read-only; anything else refused must be untouched.
                assert!(
                    matches!(e, Error::Corrupt { .. } | Error::Damaged { .. }),
                    "{e}"
                );
                assert!(!recover || !matches!(e, Error::Damaged { .. }), "{e}");
                assert_eq!(
                    std::fs::read(file).unwrap(),
                    bytes,
                    "rejected file modified"
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = temp("input.bin");
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut b = seed().to_vec();
        for edit in rest.chunks_exact(5) {
            let pos = u32::from_le_bytes([edit[0], edit[1], edit[2], edit[3]]);
            let at = if pos >> 31 == 0 {
                pos as usize % (64 << 10)
            } else {
                pos as usize % b.len()
            };
            b[at] ^= edit[4];
        }
        if mode & 2 != 0 {
            // Truncate to a multiple of 4 KiB chosen by the mode byte.
            let len = usize::from(mode >> 2) * 4096;
            b.truncate(len.max(4096));
        }
        b
    };
    let _ = rfmalloc::check::check_image(&bytes);
    probe(&file, &bytes);
    let _ = std::fs::remove_file(&file);
});
