//! Vectors in the heap.

pub(crate) mod alloc;
pub(crate) mod altrep;
pub(crate) mod altstring;
pub(crate) mod classic;
pub(crate) mod serialize;
