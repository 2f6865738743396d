//! Everything that touches R: savvy functions, ALTREP classes, the
//! Rf_allocVector3 allocator, error -> condition.
