//! Vectors in the heap: the ALTREP classes and the classic allocator, from
//! the bottom up (a module uses only those listed before it).

/// Heap space for vectors and R's garbage collector.
pub(crate) mod alloc;
/// The ALTREP classes: registration, methods, vectors over blocks.
pub(crate) mod altrep;
/// Element methods of character vectors over a string pool.
pub(crate) mod altstring;
/// Classic vectors: R's own nodes allocated in the heap.
pub(crate) mod classic;
/// Making vectors on either path and recognising them.
pub(crate) mod create;
/// What an ALTREP vector holds (`VecData`) and its accessors.
pub(crate) mod data;
/// Serializing named vectors by reference (ALTREP serialize methods).
pub(crate) mod serialize;
