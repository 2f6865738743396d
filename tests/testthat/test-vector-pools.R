# String pools: where a character vector's strings live has one owner (the
# pool shared by every vector over it, in the core), so growth through one
# handle is seen by every handle, never leaves a stale pointer, and never
# moves a block another object still holds. Issue 9, items 2, 3 and 4.

test_that("forked children may overwrite strings in place but never append (issue 9.4)", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  # In a fresh R process, like every fork of the suite: see test-process.R.
  res <- callr::r(function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path, size_gb = 0.01)
    fmalloc_save(rep("abcd", 8), "m", heap)
    # Longer strings need room in the pool: two children appending at its
    # one free end would overwrite each other's strings.
    longer <- parallel::mclapply(1:8, function(i) {
      v <- fmalloc_get("m", heap)
      tryCatch({
        v[i] <- strrep(letters[i], 40)
        "written"
      }, fmalloc_forked = function(e) "forked")
    }, mc.cores = 2)
    after_longer <- fmalloc_get("m", heap)[]
    # Writes that fit in place (not longer, or NA) reach the file.
    fitting <- parallel::mclapply(1:8, function(i) {
      v <- fmalloc_get("m", heap)
      v[i] <- if (i == 8) NA else strrep(letters[i], 1 + i %% 4)
      "ok"
    }, mc.cores = 2)
    list(longer = unlist(longer), after_longer = after_longer,
         fitting = unlist(fitting), after = fmalloc_get("m", heap)[],
         problems = nrow(fmalloc_check(heap)))
  }, list(path = local_heap_path()), libpath = .libPaths())
  expect_identical(res$longer, rep("forked", 8))
  expect_identical(res$after_longer, rep("abcd", 8))
  expect_identical(res$fitting, rep("ok", 8))
  expect_identical(res$after, c(strrep(letters[1:7], 1 + (1:7) %% 4), NA))
  expect_identical(res$problems, 0L)
})

test_that("a pool that grows after R expanded the strings is read correctly (issue 9.2)", {
  skip_if_not_installed("callr")
  # Before the fix R read pool bytes as CHARSXP pointers and crashed: run
  # it in a child process so the suite survives a regression.
  out <- callr::r(function() {
    heap <- Rfmalloc::fmalloc_open(tempfile(fileext = ".bin"), size_gb = 0.01)
    x <- Rfmalloc::create_fmalloc_vector("character", 4, heap)
    x[1] <- "a"
    # A builtin that reads the strings through their data pointer (R
    # expands them) without adding a reference to x.
    first <- .Internal(radixsort(TRUE, FALSE, FALSE, TRUE, x))
    for (i in 4:1) x[i] <- strrep(letters[i], 2000) # the pool grows
    list(
      fmalloc = Rfmalloc::is_fmalloc(x),
      order = .Internal(radixsort(TRUE, FALSE, FALSE, TRUE, x)),
      values = x[],
      first = first
    )
  }, libpath = .libPaths())
  expect_true(out$fmalloc)
  expect_identical(out$order, 1:4)
  expect_identical(out$values, strrep(letters[1:4], 2000))
})

test_that("an expanded vector and the pool stay in step when it grows", {
  skip_if_not_installed("callr")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("a", "b", "c"), "s", heap)
  fmalloc_close(heap)
  rm(heap)
  gc()
  # In a child process: before the fix this crashed R.
  got <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path)
    f <- function() {
      x <- Rfmalloc::fmalloc_get("s", heap)
      invisible(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, x)))
      x[2] <- strrep("q", 3000)
      x[3] <- NA
      list(mine = x[], order = .Internal(radixsort(TRUE, FALSE, FALSE, TRUE, x)))
    }
    c(f(), list(saved = Rfmalloc::fmalloc_get("s", heap)))
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(got$mine, c("a", strrep("q", 3000), NA))
  expect_identical(got$order, c(1L, 2L, 3L))
  expect_identical(got$saved, c("a", strrep("q", 3000), NA))
})

test_that("a removed object's vectors never write into another object (issue 9.3)", {
  heap <- local_heap()
  fmalloc_save(c("a", "b"), "s", heap)
  a <- fmalloc_get("s", heap)
  b <- fmalloc_get("s", heap)
  fmalloc_rm("s", heap) # a and b still hold the (now unnamed) pool
  a[1] <- strrep("z", 5000) # grows the pool both hold
  # New objects of the old pool's size: before the fix one of them reused
  # the block b still pointed at, and b's writes landed in it.
  for (k in 1:20) fmalloc_save(as.double(1:44) + k, paste0("t", k), heap)
  b[2] <- "QQQQQQQQ"
  b[1] <- "R"
  for (k in 1:20) {
    expect_identical(fmalloc_get(paste0("t", k), heap), as.double(1:44) + k)
  }
  expect_identical(a[], c("R", "QQQQQQQQ"))
  expect_identical(b[], c("R", "QQQQQQQQ"))
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("two handles on one named character object stay consistent (issue 9.4)", {
  heap <- local_heap()
  fmalloc_save(c("a", "b", "c"), "s", heap)
  a <- fmalloc_get("s", heap)
  b <- fmalloc_get("s", heap)
  a[1] <- strrep("z", 5000) # the named pool moves to a bigger block
  b[2] <- "B" # before the fix: written into the old pool, lost
  expect_identical(a[2], "B")
  expect_identical(b[1], strrep("z", 5000))
  expect_identical(fmalloc_get("s", heap), c(strrep("z", 5000), "B", "c"))
  # A handle whose strings R expanded sees writes made through the other.
  invisible(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, a)))
  b[3] <- strrep("y", 9000)
  expect_identical(a[3], strrep("y", 9000))
  expect_identical(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, a)), c(2L, 3L, 1L))
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("an element-wise copy between two views, one expanded, stays linear", {
  heap <- local_heap()
  n <- 50000
  x <- create_fmalloc_vector("character", n, heap = heap, name = "s")
  x[] <- paste0("s", seq_len(n))
  y <- fmalloc_get("s", heap)
  invisible(order(y)) # R asks y for its data pointer: y is expanded
  # Each write through x made y rebuild all n strings at its next read:
  # 26 s at n = 16 000, a hang at 300 000. Now y reads the pool until R
  # asks for its data pointer again.
  setTimeLimit(elapsed = 60, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf))
  for (i in seq_len(n)) x[i] <- paste0(y[i], "!")
  setTimeLimit(elapsed = Inf)
  expect_identical(y[c(1, n)], paste0("s", c(1, n), "!"))
  expect_identical(order(y), order(paste0("s", seq_len(n), "!")))
  expect_identical(fmalloc_get("s", heap, copy = TRUE), paste0("s", seq_len(n), "!"))
  # Writes through an expanded view keep it in step, and reach the file
  # (a new view: y is shared by now, R would copy it).
  z <- fmalloc_get("s", heap)
  invisible(.Internal(radixsort(TRUE, FALSE, FALSE, TRUE, z)))
  z[2] <- "two"
  expect_identical(x[2], "two")
  expect_identical(z[order(z)][n], "two")
})

test_that("two views alias as documented; fmalloc_write() reads its value first", {
  heap <- local_heap()
  x <- create_fmalloc_vector("double", 6, heap = heap, name = "v")
  x[] <- 1:6
  y <- fmalloc_get("v", heap)
  fmalloc_write(heap, "v", 6:1, y)
  expect_identical(fmalloc_get("v", heap)[], as.double(6:1))
  x[1:6] <- fmalloc_get("v", heap, copy = TRUE)[6:1]
  expect_identical(y[], as.double(1:6))
})
