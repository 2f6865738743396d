//! Mapping of the heap file in extents that never move.
