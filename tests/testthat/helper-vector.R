# Helpers of the vector tests (test-vector-*.R).

# Makes a fresh heap file the session default for the calling test; closes
# it and removes the file when the test ends (the test's vectors still live
# then: fmalloc_close()'s message that they hold the file is expected).
local_default_heap <- function(size_gb = 0.0625, env = parent.frame()) {
  path <- withr::local_tempfile(pattern = "vec-", fileext = ".bin", .local_envir = env)
  created <- init_fmalloc(path, size_gb = size_gb)
  withr::defer({
    suppressMessages(cleanup_fmalloc(), classes = "fmalloc_pinned")
    gc()
  }, envir = env, priority = "first")
  stopifnot(isTRUE(created))
  path
}

# `n` bytes of the file at `offset`, read by a second R process: proves that
# data reached the file, not just this process's view of an object.
file_bytes <- function(path, offset, n) {
  callr::r(function(path, offset, n) {
    con <- file(path, "rb")
    on.exit(close(con))
    seek(con, offset)
    readBin(con, "raw", n)
  }, args = list(path = path, offset = offset, n = n))
}

# The bytes R holds for an atomic vector (little-endian, as in the heap).
vector_bytes <- function(x) {
  switch(typeof(x),
    raw = x,
    logical = , integer = writeBin(as.integer(x), raw(), size = 4L, endian = "little"),
    double = writeBin(x, raw(), size = 8L, endian = "little"),
    complex = writeBin(x, raw(), endian = "little")
  )
}

# The classic method exists unless installed with RFMALLOC_CLASSIC=false.
methods <- if (fmalloc_has_classic()) c("altrep", "classic") else "altrep"

skip_if_no_classic <- function() {
  skip_if_not(fmalloc_has_classic(), "built with RFMALLOC_CLASSIC=false")
}

# A copy made by R's duplicate() (through copy-on-modify of a shared value).
duplicate_of <- function(x) {
  y <- x
  y[1] <- y[1]
  y
}
