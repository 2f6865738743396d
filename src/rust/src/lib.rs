//! Rfmalloc: R vectors in a memory-mapped heap file.
//!
//! The core (everything but `r`) is pure Rust and knows nothing of R.

pub mod alloc;
pub mod catalog;
pub mod check;
pub mod error;
pub mod format;
pub mod heap;
pub mod lock;
pub mod map;
pub mod pool;
#[doc(hidden)]
pub mod prng;
pub mod strpool;
mod sys;

mod r;
