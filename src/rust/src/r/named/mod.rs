//! Named objects.

pub(crate) mod assemble;
pub(crate) mod leaf;
pub(crate) mod meta;
