//! The file allocator: malloc / free / resize over *offsets* in the heap file.
//!
//! CONTRACT (owned by the allocator helper; the facade in `heap.rs` relies on it):
//! - Payload offsets are 64-byte aligned (`ALIGN`). Block metadata is in-band
//!   (a small header just before each payload, written through `Mem`), the
//!   free-list heads and bitmaps live in RAM in `Allocator` (rebuilt at every
//!   writable open from the catalog's live blocks; nothing of the allocator's
//!   RAM state is persisted).
//! - An *arena* is a contiguous, mapped offset range. Blocks never cross arena
//!   boundaries (the heap grows by adding arenas, each a separate mapping).
//! - Nothing here panics on bad input: `free`/`usable_size`/`resize_in_place`
//!   validate the offset (inside an arena, aligned, a header that is live and
//!   sane) and return `Err` otherwise.

/// Alignment of every payload offset, in bytes.
pub const ALIGN: u64 = 64;

/// Memory the allocator writes its in-band headers to. Offsets are absolute
/// file offsets, 8-byte aligned, and always inside an arena that was added.
pub trait Mem {
    fn load(&self, off: u64) -> u64;
    fn store(&mut self, off: u64, val: u64);
}

/// Totals over all arenas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub arena_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub used_blocks: u64,
    pub free_blocks: u64,
}

pub struct Allocator {}

impl Allocator {
    pub fn new() -> Self {
        todo!()
    }

    /// Adds `[start, end)` as a new arena, all free. `start`/`end` are 64-aligned.
    pub fn add_arena<M: Mem>(&mut self, _mem: &mut M, _start: u64, _end: u64) {
        todo!()
    }

    /// Adds `[start, end)` as an arena in which exactly the blocks `live`
    /// (payload offset, capacity in bytes) are in use and everything else is
    /// free. Used to rebuild the allocator from the catalog at open.
    /// Errors (overlap, misalignment, out of range) leave `self` unchanged.
    pub fn add_arena_with_live<M: Mem>(
        &mut self,
        _mem: &mut M,
        _start: u64,
        _end: u64,
        _live: &[(u64, u64)],
    ) -> Result<(), String> {
        todo!()
    }

    /// Allocates at least `size` bytes (size 0 allowed); `None` when no arena
    /// has room (the caller then grows the heap by adding an arena).
    pub fn malloc<M: Mem>(&mut self, _mem: &mut M, _size: u64) -> Option<u64> {
        todo!()
    }

    /// Frees the block at payload offset `off`; coalesces with free neighbours.
    pub fn free<M: Mem>(&mut self, _mem: &mut M, _off: u64) -> Result<(), String> {
        todo!()
    }

    /// Grows or shrinks the block in place if possible (`Ok(true)`);
    /// `Ok(false)` means the caller must allocate, copy and free.
    pub fn resize_in_place<M: Mem>(
        &mut self,
        _mem: &mut M,
        _off: u64,
        _new_size: u64,
    ) -> Result<bool, String> {
        todo!()
    }

    /// Usable bytes of the live block at `off` (>= the size requested).
    pub fn usable_size<M: Mem>(&self, _mem: &M, _off: u64) -> Result<u64, String> {
        todo!()
    }

    pub fn stats(&self) -> Stats {
        todo!()
    }

    /// Walks every block of every arena: no overlap, sizes aligned, arena
    /// exactly tiled, free lists consistent with headers, no two adjacent free
    /// blocks, stats consistent.
    pub fn check_invariants<M: Mem>(&self, _mem: &M) -> Result<(), String> {
        todo!()
    }
}

impl Default for Allocator {
    fn default() -> Self {
        Self::new()
    }
}
