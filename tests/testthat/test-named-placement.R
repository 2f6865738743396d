# Where the catalog lies in the file: next to the header, so that a reader
# opening the heap (which reads the header page, the kernel reading 128 KiB
# around it) gets the catalog and an object's meta in that same disk read,
# even after a large vector was made and saved (inst/FORMAT.md, "Placement").

# u64 at `off` of the raw vector `b` (little-endian; exact below 2^53).
u64_at <- function(b, off) sum(as.numeric(b[off + 1:8]) * 256^(0:7))

# The root page offset and the first entry's meta offset of the slot in
# force, read from the file's bytes as a third-party reader would.
catalog_offsets <- function(path) {
  con <- file(path, "rb")
  on.exit(close(con))
  b <- readBin(con, "raw", 4096)
  slots <- c(64, 128)
  gen <- vapply(slots, function(s) u64_at(b, s), 0)
  s <- slots[which.max(gen)]
  root <- u64_at(b, s + 8)
  # The root of a one-object catalog is a leaf (kind 1 at +8); its first
  # record starts at +32 and holds the meta offset at +24.
  seek(con, root)
  page <- readBin(con, "raw", 4096)
  stopifnot(identical(rawToChar(page[1:7]), "RFMCATP"), page[9] == as.raw(1))
  c(root = root, meta = u64_at(page, 32 + 24))
}

test_that("the catalog and metas lie within the first 128 KiB, after a large vector", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.25)
  x <- create_fmalloc_vector("double", 1.25e7, heap = heap, init = FALSE) # 100 MB
  x[c(1, 1.25e7)] <- c(1.5, 2.5)
  fmalloc_save(x, "big", heap)
  off <- catalog_offsets(path)
  expect_lt(off[["root"]], 96 * 1024)
  expect_lt(off[["meta"]], 96 * 1024)
  rm(x)
  fmalloc_close(heap)
  invisible(gc())

  # Still there after a reopen (the allocator is rebuilt) and more commits,
  # and the data read back in a new process.
  heap <- fmalloc_open(path)
  fmalloc_save(1:10, "small", heap)
  fmalloc_rm("small", heap)
  fmalloc_close(heap)
  invisible(gc())
  off <- catalog_offsets(path)
  expect_lt(off[["root"]], 96 * 1024)
  expect_lt(off[["meta"]], 96 * 1024)
  got <- callr::r(function(path) {
    library(Rfmalloc)
    h <- fmalloc_open(path, readonly = TRUE)
    x <- fmalloc_get("big", h)
    c(length(x), x[1], x[length(x)])
  }, args = list(path = path))
  expect_identical(got, c(1.25e7, 1.5, 2.5))
  expect_equal(nrow(fmalloc_check(path)), 0L)
})
