//! Helpers shared by the heap_* integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rfmalloc::heap::{BlockDesc, ElemType, Heap, OpenOptions};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rfm-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn opts(size: u64) -> OpenOptions {
    OpenOptions {
        readonly: false,
        initial_size: Some(size),
        ..Default::default()
    }
}

pub fn ro() -> OpenOptions {
    OpenOptions {
        readonly: true,
        initial_size: None,
        ..Default::default()
    }
}

pub fn open(path: &Path, size: u64) -> Heap {
    Heap::open(path, &opts(size)).unwrap().0
}

/// Writes `bytes` into the block at `off`.
pub fn write(h: &Heap, off: u64, bytes: &[u8]) {
    let p = h.ptr(off, bytes.len() as u64).unwrap();
    // SAFETY: `ptr` checked the range lies in the writable mapping.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr(), bytes.len()) };
}

/// Reads `len` bytes at `off`.
pub fn read(h: &Heap, off: u64, len: u64) -> Vec<u8> {
    let p = h.ptr(off, len).unwrap();
    // SAFETY: `ptr` checked the range lies in the mapping.
    unsafe { std::slice::from_raw_parts(p.as_ptr(), len as usize) }.to_vec()
}

/// A raw block descriptor covering `len` bytes from the block start.
pub fn raw(off: u64, len: u64) -> BlockDesc {
    BlockDesc {
        offset: off,
        data_offset: off,
        elem: ElemType::Raw,
        length: len,
    }
}

/// malloc + fill with `fill` + put under `name`.
pub fn put_bytes(h: &Heap, name: &str, len: u64, fill: u8) -> u64 {
    let off = h.malloc(len).unwrap();
    write(h, off, &vec![fill; len as usize]);
    h.put(name, &[fill, 1, 2, 3], &[raw(off, len)], true)
        .unwrap();
    h.release(off).unwrap();
    off
}

/// The bytes of the named raw object.
pub fn get_bytes(h: &Heap, name: &str) -> Vec<u8> {
    let e = h.get(name).unwrap();
    let b = &e.blocks[0];
    read(h, b.data_offset, b.length)
}
