# Serialization: by value by default (readable without Rfmalloc), by
# reference on request (the receiving process maps the same file).

# A heap file holding "df" (a data frame) and "x" (1e5 doubles), closed.
local_saved_heap <- function(env = parent.frame()) {
  path <- local_heap_path(env)
  heap <- fmalloc_open(path, size_gb = 0.05)
  fmalloc_save(data.frame(a = 1:3, b = c("x", NA, "\u00e9"), f = factor(c("u", "v", "u"))), "df", heap)
  fmalloc_save(as.double(1:1e5), "x", heap)
  fmalloc_close(heap)
  invisible(gc())
  path
}

test_that("by default saveRDS writes values readable without Rfmalloc", {
  skip_if_not_installed("callr")
  path <- local_saved_heap()
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  df <- fmalloc_get("df", heap)
  x <- fmalloc_get("x", heap)
  rds <- withr::local_tempfile(fileext = ".rds")
  saveRDS(list(df = df, x = x), rds)
  expect_gt(file.size(rds), 1e5) # the data themselves
  res <- callr::r(function(rds) {
    obj <- readRDS(rds)
    list(obj = obj, loaded = "Rfmalloc" %in% loadedNamespaces())
  }, args = list(rds = rds), libpath = .libPaths())
  expect_false(res$loaded)
  expect_identical(res$obj$df, df)
  expect_identical(res$obj$x, x)
})

test_that("fmalloc_ref() and the option send a reference, not the data", {
  path <- local_saved_heap()
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  x <- fmalloc_get("x", heap)
  df <- fmalloc_get("df", heap)

  bytes <- serialize(fmalloc_ref(x), NULL)
  expect_lt(length(bytes), 2000)
  back <- unserialize(bytes)
  # (Before identical(), which asks R for writable memory: a read-only
  # vector then holds a private copy, and is_fmalloc() says so.)
  expect_true(is_fmalloc(back))
  expect_identical(back, x)
  expect_identical(Rfmalloc:::.fmalloc_inspect(back)$offset, Rfmalloc:::.fmalloc_inspect(x)$offset)

  # Data frames: each column by reference, attributes by value.
  back <- unserialize(serialize(fmalloc_ref(df), NULL))
  expect_true(all(vapply(back, is_fmalloc, NA)))
  expect_identical(back, df)

  withr::local_options(fmalloc.serialize = "reference")
  x <- fmalloc_get("x", heap) # (identical() above gave x a private copy)
  expect_lt(length(serialize(x, NULL)), 2000)
  # A vector that is not part of a named object is still sent by value.
  expect_gt(length(serialize(x + 0, NULL)), 8e5)
  withr::local_options(fmalloc.serialize = NULL)
  x <- fmalloc_get("x", heap)
  expect_gt(length(serialize(x, NULL)), 8e5)
  # Serializing by value made R ask this read-only vector for a writable
  # pointer (so it holds a private copy), but its values are still those of
  # the file: it can still be sent by reference.
  expect_lt(length(serialize(fmalloc_ref(x), NULL)), 2000)
  x[1] <- -1 # now it differs from the file
  expect_fmalloc_error(fmalloc_ref(x), "fmalloc_invalid", "modified")
})

test_that("fmalloc_ref() takes a character vector R expanded, unless read-only and changed", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("b", "a", "c"), "s", heap)
  # R asks y for its data pointer (expands it): .Internal(), so that y
  # stays unshared and y[1] <- "B" below writes it in place.
  y <- fmalloc_get("s", heap)
  invisible(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, y)))
  y[1] <- "B"
  # Was fmalloc_invalid ("modified in memory"): a writable vector's strings
  # are always in its pool.
  back <- unserialize(serialize(fmalloc_ref(y), NULL))
  expect_identical(back, c("B", "a", "c"))
  expect_identical(fmalloc_get("s", heap), c("B", "a", "c"))
  rm(y, back)
  fmalloc_close(heap)
  invisible(gc())
  ro <- fmalloc_open(path, readonly = TRUE)
  on.exit(suppressMessages(fmalloc_close(ro), classes = "fmalloc_pinned"))
  z <- fmalloc_get("s", ro)
  invisible(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, z)))
  z[2] <- "A" # a private copy: the file still holds "a"
  expect_fmalloc_error(fmalloc_ref(z), "fmalloc_invalid", "modified")
})

test_that("fmalloc_ref() refuses vectors that are not named heap vectors", {
  heap <- local_heap()
  expect_fmalloc_error(fmalloc_ref(1:3), "fmalloc_invalid", "got from a heap")
  v <- create_fmalloc_vector("double", 10, heap = heap)
  expect_fmalloc_error(fmalloc_ref(v), "fmalloc_invalid", "fmalloc_save")
  expect_identical(fmalloc_ref(list(NULL, integer(0))), list(NULL, integer(0)))
})

test_that("PSOCK workers reconnect to the same file", {
  skip_on_cran()
  path <- local_saved_heap()
  cl <- parallel::makePSOCKcluster(2)
  on.exit(parallel::stopCluster(cl), add = TRUE)
  parallel::clusterCall(cl, function(lib) .libPaths(c(lib, .libPaths())), .libPaths())
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap), add = TRUE)
  x <- fmalloc_get("x", heap)
  df <- fmalloc_get("df", heap)

  worker <- function(i, v, d) {
    list(
      pid = Sys.getpid(),
      mapped = Rfmalloc::is_fmalloc(v) && all(vapply(d, Rfmalloc::is_fmalloc, NA)),
      path = Rfmalloc:::.fmalloc_inspect(v)$path,
      sum = sum(v),
      df = d
    )
  }
  # Not this frame: parallel would send its variables (x, df) along, by value.
  environment(worker) <- globalenv()
  res <- parallel::parLapply(cl, 1:2, worker, v = fmalloc_ref(x), d = fmalloc_ref(df))
  for (r in res) {
    expect_false(r$pid == Sys.getpid())
    expect_true(r$mapped)
    expect_identical(normalizePath(r$path), normalizePath(path))
    expect_identical(r$sum, sum(as.double(1:1e5)))
    expect_identical(r$df, df)
  }
})

test_that("a reference to a missing, replaced or changed heap is a clear error", {
  path <- local_saved_heap()
  heap <- fmalloc_open(path)
  x <- fmalloc_get("x", heap)
  ref <- serialize(fmalloc_ref(x), NULL)

  # The object was removed.
  fmalloc_rm("x", heap)
  expect_fmalloc_error(unserialize(ref), "fmalloc_not_found", "removed")
  rm(x)
  fmalloc_close(heap)
  invisible(gc())

  # The file is now another heap.
  unlink(path)
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(as.double(1:1e5), "x", heap)
  expect_fmalloc_error(unserialize(ref), "fmalloc_mismatch", "different heap")
  fmalloc_close(heap)
  invisible(gc())

  # The file is gone.
  unlink(path)
  expect_fmalloc_error(unserialize(ref), "fmalloc_not_found", "does not exist")
})

test_that("a reference to a heap another process writes to is fmalloc_locked", {
  skip_if_not_installed("callr")
  path <- local_saved_heap()
  heap <- fmalloc_open(path, readonly = TRUE)
  ref <- serialize(fmalloc_ref(fmalloc_get("x", heap)), NULL)
  fmalloc_close(heap)
  invisible(gc())
  local_holder(path) # a writer in another process
  err <- expect_fmalloc_error(unserialize(ref), "fmalloc_locked")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
})

test_that("fmalloc_ref() under gctorture returns a live vector identical to the original", {
  # Issue 9, item 5: the new vector was left unprotected while R allocated,
  # so under gctorture it was collected before it was returned.
  skip_on_cran()
  skip_if_not_installed("callr")
  path <- local_heap_path()
  res <- callr::r(function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path, size_gb = 0.01)
    orig <- structure(as.double(1:50), names = paste0("e", 1:50), note = "kept")
    fmalloc_save(orig, "x", heap)
    x <- fmalloc_get("x", heap)
    chr <- fmalloc_save(c(a = "u", b = NA, c = "\u00e9"), "s", heap)
    gctorture(TRUE)
    y <- fmalloc_ref(x)
    s <- fmalloc_ref(chr)
    z <- fmalloc_ref(list(x = x, s = chr))
    gctorture(FALSE)
    list(
      identical = c(identical(y, orig), identical(z$x, orig),
                    identical(s, c(a = "u", b = NA, c = "\u00e9")), identical(z$s, s)),
      usable = c(sum(y), sum(z$x), nchar(s[[3]])),
      in_heap = c(is_fmalloc(y), is_fmalloc(s), is_fmalloc(z$x))
    )
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(res$identical, rep(TRUE, 4))
  expect_identical(res$usable, c(1275, 1275, 1))
  expect_identical(res$in_heap, rep(TRUE, 3))
})

test_that("a vector received by reference serializes by value again", {
  # Issue 12: it was sent by reference again, so saveRDS() archived a
  # pointer that readRDS() could not follow once the heap was gone.
  path <- local_saved_heap()
  heap <- fmalloc_open(path, readonly = TRUE)
  x <- fmalloc_get("x", heap)
  y <- unserialize(serialize(fmalloc_ref(x), NULL))
  expect_true(is_fmalloc(y))
  expect_gt(length(serialize(y, NULL)), 8e5)
  rds <- withr::local_tempfile(fileext = ".rds")
  saveRDS(y, rds)
  # Asked for again, a reference it is.
  expect_lt(length(serialize(fmalloc_ref(y), NULL)), 2000)
  rm(x, y)
  fmalloc_close(heap)
  invisible(gc())
  unlink(path)
  expect_identical(readRDS(rds), as.double(1:1e5))
})

test_that("a worker's result does not pin the heap read-only in the parent", {
  skip_if_not_installed("callr")
  path <- local_saved_heap()
  heap <- fmalloc_open(path, readonly = TRUE)
  x <- fmalloc_get("x", heap)
  # The worker gets `x` by reference and returns it: by value.
  back <- callr::r(function(v) list(in_heap = Rfmalloc::is_fmalloc(v), v = v),
                   args = list(v = fmalloc_ref(x)), libpath = .libPaths())
  expect_true(back$in_heap)
  expect_false(is_fmalloc(back$v))
  expect_identical(back$v, x)
  rm(x)
  fmalloc_close(heap)
  invisible(gc())
  writer <- fmalloc_open(path) # was fmalloc_locked: "this session has it open read-only"
  expect_false(fmalloc_info(writer)$readonly)
  fmalloc_close(writer)
  invisible(gc())

  # A worker that asks for a reference back: the parent maps the file
  # read-only while it holds the vector, and is told so; dropping the vector
  # releases the heap.
  back <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    Rfmalloc::fmalloc_ref(Rfmalloc::fmalloc_get("x", heap))
  }, args = list(path = path), libpath = .libPaths())
  expect_true(is_fmalloc(back))
  expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked", "read-only")
  rm(back)
  invisible(gc())
  writer <- fmalloc_open(path)
  expect_false(fmalloc_info(writer)$readonly)
  fmalloc_close(writer)
})

test_that("a wide data frame goes by reference in time linear in its columns", {
  skip_on_cran()
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  p <- 5000
  fmalloc_save(as.data.frame(matrix(as.double(seq_len(3 * p)), 3, p)), "wide", heap)
  g <- fmalloc_get("wide", heap)
  # Each column's reference looked its block up by walking the whole
  # catalog, and each reconnect asked for fmalloc_info() (which walks it on
  # a read-only heap): 7-8 s here at 5000 columns, quadratic; now < 1 s.
  setTimeLimit(elapsed = 4, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf), add = TRUE)
  back <- unserialize(serialize(fmalloc_ref(g), NULL))
  setTimeLimit(elapsed = Inf)
  expect_identical(back, g)
  expect_true(all(vapply(back, is_fmalloc, NA)))
  rm(g, back)
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
})

test_that("a reference to a removed object is refused when another object took its block", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.1)
  fmalloc_save(as.double(1:2e6), "x", heap)
  ref <- serialize(fmalloc_ref(fmalloc_get("x", heap)), NULL)
  block <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("x", heap))$block
  invisible(gc())
  fmalloc_rm("x", heap)
  invisible(gc())
  fmalloc_sync(heap)
  # Same type and length: the freed block is taken again, at the same
  # offset. The reference (path, heap id, offsets) matched it and gave z's
  # values for x's.
  fmalloc_save(-as.double(1:2e6), "z", heap)
  expect_identical(Rfmalloc:::.fmalloc_inspect(fmalloc_get("z", heap))$block, block)
  expect_fmalloc_error(unserialize(ref), "fmalloc_not_found", "object 'x'")
  # A worker, after the heap is closed: the same.
  invisible(gc())
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
  invisible(gc())
  got <- callr::r(function(ref) {
    tryCatch(head(unserialize(ref)), error = function(e) class(e)[[1]])
  }, list(ref), libpath = .libPaths())
  expect_identical(got, "fmalloc_not_found")
})
