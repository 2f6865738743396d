//! Named objects: a leaf per stored vector, the meta blob describing the
//! object, and the object rebuilt from it (from the bottom up).

/// Building an object from its meta.
pub(crate) mod assemble;
/// Leaves: where a vector's data live, copies into new blocks.
pub(crate) mod leaf;
/// The columns of a listing (`fmalloc_ls()`).
pub(crate) mod listing;
/// Encoding the meta blob from R's description of an object.
pub(crate) mod meta;
pub(crate) mod progress;
