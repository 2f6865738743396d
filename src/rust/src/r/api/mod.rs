//! The `#[savvy]` entry points R calls: each converts its arguments
//! (`r::args`), calls the layers below and converts the result.

/// Batches (one commit for many changes) and the durability setting.
mod batch;
/// The heap handle: open, close, info, sync, check.
mod heap;
/// Who holds a heap file: this session's vectors, another process.
pub(crate) mod holders;
/// `fmalloc_save()`, `fmalloc_get()`, `fmalloc_ls()`, ...
mod named;
/// Serializing named vectors by reference.
mod reference;
/// `create_fmalloc_vector()`, `is_fmalloc()`, `.fmalloc_inspect()`.
mod vector;
/// `fmalloc_write()`, `fmalloc_set_attr()`: writes that reach the file.
mod write;
