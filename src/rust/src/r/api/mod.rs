//! The `#[savvy]` entry points.

mod named;
