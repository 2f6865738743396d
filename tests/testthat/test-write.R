# fmalloc_write(), fmalloc_set_attr(), fmalloc_get(copy = TRUE): writes that
# reach the heap file (checked from a new process) or fail with a classed
# error, whatever R's reference counts.

# The objects `names` of the heap of `h` (from local_objects()), as a new R
# process reads them. The heap is closed here first: no vector of it may be
# left in the calling test.
reopened <- function(h, names) {
  fmalloc_close(h$heap)
  invisible(gc())
  callr::r(function(path, names) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    lapply(stats::setNames(names, names), function(n) Rfmalloc::fmalloc_get(n, heap, copy = TRUE))
  }, args = list(path = h$path, names = names), libpath = .libPaths())
}

# A writable heap holding one object of each kind; closed (and removed) when
# the calling test ends.
local_objects <- function(env = parent.frame()) {
  path <- local_heap_path(env)
  heap <- fmalloc_open(path, size_gb = 0.05)
  withr::defer(fmalloc_close(heap), envir = env)
  fmalloc_save(c(1L, 2L, 3L, 4L, 5L), "counts", heap)
  fmalloc_save(c(TRUE, FALSE, TRUE), "flags", heap)
  fmalloc_save(c(a = 1.5, b = 2.5, c = 3.5), "x", heap)
  fmalloc_save(c(1 + 1i, 2i), "z", heap)
  fmalloc_save(as.raw(1:3), "bytes", heap)
  fmalloc_save(c("tea", NA, "cocoa"), "s", heap)
  fmalloc_save(matrix(1:12, 3, dimnames = list(c("r1", "r2", "r3"), c("A", "B", "C", "D"))), "m", heap)
  fmalloc_save(data.frame(
    item = factor(c("tea", "coffee", "tea")),
    price = c(3.5, 4.25, 3.5),
    day = as.Date("2024-01-01") + 0:2,
    at = as.POSIXct("2024-01-01 12:00:00", tz = "UTC") + 0:2,
    qty = 1:3,
    note = c("a", "b", "c"),
    row.names = c("x1", "x2", "x3"),
    stringsAsFactors = FALSE
  ), "df", heap)
  list(path = path, heap = heap)
}

test_that("fmalloc_write() writes every stored type into the file", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  fmalloc_write(heap, "counts", 3, 42L)
  fmalloc_write(heap, "counts", 1, 7) # a whole double: stored as integer
  fmalloc_write(heap, "flags", 2, 1) # 0/1: stored as logical
  fmalloc_write(heap, "flags", 3, NA)
  fmalloc_write(heap, "x", "b", 20L) # by name; integer into double
  fmalloc_write(heap, "z", 2, 5)
  fmalloc_write(heap, "bytes", 1:2, c(255, 0))
  fmalloc_write(heap, "s", 2:3, c("a much longer string than before", NA))
  got <- reopened(h, c("counts", "flags", "x", "z", "bytes", "s"))
  expect_identical(got$counts, c(7L, 2L, 42L, 4L, 5L))
  expect_identical(got$flags, c(TRUE, TRUE, NA))
  expect_identical(got$x, c(a = 1.5, b = 20, c = 3.5))
  expect_identical(got$z, c(1 + 1i, 5 + 0i))
  expect_identical(got$bytes, as.raw(c(255, 0, 3)))
  expect_identical(got$s, c("tea", "a much longer string than before", NA))
})

test_that("the replacement form writes, and returns the heap", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  fmalloc_write(heap, "counts", 2:3) <- c(20L, 30L)
  fmalloc_write(heap, "df", "x2", "price") <- 9.25
  expect_s3_class(heap, "fmalloc_heap")
  expect_identical(fmalloc_write(heap, "counts", 1, 1L), heap)
  got <- reopened(h, c("counts", "df"))
  expect_identical(got$counts, c(1L, 20L, 30L, 4L, 5L))
  expect_identical(got$df$price, c(3.5, 9.25, 3.5))
})

test_that("values that cannot be stored exactly are fmalloc_type errors and write nothing", {
  h <- local_objects()
  heap <- h$heap
  err <- expect_fmalloc_error(fmalloc_write(heap, "counts", 1:2, c(1, 1.5)), "fmalloc_type")
  expect_match(conditionMessage(err), "1.5 (element 2)", fixed = TRUE)
  expect_match(conditionMessage(err), "integer", fixed = TRUE)
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1, 3e9), "fmalloc_type")
  expect_fmalloc_error(fmalloc_write(heap, "flags", 1, 2), "fmalloc_type", "logical")
  expect_fmalloc_error(fmalloc_write(heap, "x", 1, "1"), "fmalloc_type", "character")
  expect_fmalloc_error(fmalloc_write(heap, "x", 1, 1i), "fmalloc_type")
  expect_fmalloc_error(fmalloc_write(heap, "s", 1, 1), "fmalloc_type")
  expect_fmalloc_error(fmalloc_write(heap, "bytes", 1, NA), "fmalloc_type", "no NA")
  expect_fmalloc_error(fmalloc_write(heap, "bytes", 1, 256), "fmalloc_type")
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1, factor("a")), "fmalloc_type", "factor")
  # A data frame: a number into a factor, an unknown level, a number into a
  # Date, a Date into a POSIXct column.
  expect_fmalloc_error(fmalloc_write(heap, "df", 1, "item", 1L), "fmalloc_type", "level labels")
  err <- expect_fmalloc_error(fmalloc_write(heap, "df", 1, "item", "cocoa"), "fmalloc_type")
  expect_match(conditionMessage(err), "\"cocoa\" is not a level of 'df$item'", fixed = TRUE)
  expect_fmalloc_error(fmalloc_write(heap, "df", 1, "day", 19000), "fmalloc_type", "Date")
  expect_fmalloc_error(fmalloc_write(heap, "df", 1, "at", Sys.Date()), "fmalloc_type", "POSIXct")
  # Several columns: the second value is refused, the first column untouched.
  expect_fmalloc_error(
    fmalloc_write(heap, "df", 1, c("price", "qty"), list(1, 1.5)), "fmalloc_type"
  )
  # NaN and NA are NA of the stored type.
  fmalloc_write(heap, "counts", 4:5, c(NaN, NA))
  expect_identical(fmalloc_get("counts", heap), c(1L, 2L, 3L, NA, NA))
  expect_identical(fmalloc_get("df", heap)$price, c(3.5, 4.25, 3.5))
})

test_that("positions are checked first: fmalloc_bounds names the argument and value", {
  h <- local_objects()
  heap <- h$heap
  err <- expect_fmalloc_error(fmalloc_write(heap, "counts", 6, 1L), "fmalloc_bounds")
  expect_match(conditionMessage(err), "`i` = 6 is out of bounds: 'counts' has 5 elements", fixed = TRUE)
  err <- expect_fmalloc_error(fmalloc_write(heap, "counts", c(1, 2, 0), 9L), "fmalloc_bounds")
  expect_match(conditionMessage(err), "`i` = 0 (element 3)", fixed = TRUE)
  expect_fmalloc_error(fmalloc_write(heap, "counts", -1, 1L), "fmalloc_bounds")
  expect_fmalloc_error(fmalloc_write(heap, "x", "zz", 1), "fmalloc_bounds", "\"zz\"")
  expect_fmalloc_error(fmalloc_write(heap, "counts", "a", 1L), "fmalloc_bounds", "no names")
  err <- expect_fmalloc_error(fmalloc_write(heap, "m", 1, 5, value = 1L), "fmalloc_bounds")
  expect_match(conditionMessage(err), "`j` = 5", fixed = TRUE)
  expect_fmalloc_error(fmalloc_write(heap, "df", 4, "qty", 1L), "fmalloc_bounds", "`i` = 4")
  expect_fmalloc_error(fmalloc_write(heap, "df", 1, "nope", 1), "fmalloc_bounds", "`j` = \"nope\"")
  expect_fmalloc_error(fmalloc_write(heap, "counts", NA_real_, 1L), "fmalloc_invalid", "NA")
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1.5, 1L), "fmalloc_invalid", "whole")
  expect_fmalloc_error(fmalloc_write(heap, "counts", c(TRUE, FALSE), 1L), "fmalloc_invalid", "logical")
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1:2, 1:3), "fmalloc_invalid", "3 elements for 2")
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1, 2, 3), "fmalloc_invalid", "`j`")
  expect_fmalloc_error(fmalloc_write(heap, "m", 1, 2), "fmalloc_invalid", "`value` is missing")
  expect_fmalloc_error(fmalloc_write(heap, "nothing", 1, 1), "fmalloc_not_found")
  fmalloc_save(list(a = 1:3), "lst", heap)
  expect_fmalloc_error(fmalloc_write(heap, "lst", 1, 1L), "fmalloc_unsupported", "list")
  # Nothing of the above was written.
  expect_identical(fmalloc_get("counts", heap), 1:5)
  expect_identical(fmalloc_get("x", heap), c(a = 1.5, b = 2.5, c = 3.5))
})

test_that("ranges, scattered positions and recycled values reach the file's bytes", {
  skip_if_not_installed("callr")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  on.exit(fmalloc_close(heap))
  v <- create_fmalloc_vector("double", 1e5, heap = heap, name = "v")
  chunk <- 25000
  for (from in seq(1, 1e5, by = chunk)) {
    fmalloc_write(heap, "v", from:(from + chunk - 1), as.double(from:(from + chunk - 1)))
  }
  fmalloc_write(heap, "v", c(10, 5, 99999), c(-1, -2, -3))
  fmalloc_write(heap, "v", 20:29, 0) # one value, recycled
  fmalloc_write(heap, "v", seq(2, 1e5, by = 2)[1:3], value = 7L)
  want <- as.double(1:1e5)
  want[c(10, 5, 99999)] <- c(-1, -2, -3)
  want[20:29] <- 0
  want[c(2, 4, 6)] <- 7
  expect_identical(v, want) # the vector got earlier sees the writes
  where <- Rfmalloc:::.fmalloc_inspect(v)
  expect_identical(file_bytes(path, where$offset, 8 * 1e5), vector_bytes(want))
})

test_that("large runs (written through the file) reach the vectors, the bytes and a new process", {
  skip_if_not_installed("callr")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  on.exit(fmalloc_close(heap))
  n <- 7e5 # 5.6 MB; runs of 2.4 MB, not page-aligned in the file
  v <- create_fmalloc_vector("double", n, heap = heap, name = "v")
  before <- v[1:5] # pages of the vector mapped before the writes
  runs <- list(3:300002, 300003:600002, 600003:n)
  for (r in runs) fmalloc_write(heap, "v", r, r * 0.5)
  fmalloc_write(heap, "v", 1:2, c(-1, -2))
  # A large value that is itself in the heap is copied through the mapping.
  w <- create_fmalloc_vector("double", 2e5, heap = heap, name = "w")
  fmalloc_write(heap, "w", seq_len(2e5), -(1:2e5))
  fmalloc_write(heap, "v", 400001:600000, fmalloc_get("w", heap))
  want <- c(-1, -2, (3:n) * 0.5)
  want[400001:600000] <- -(1:2e5)
  # A large run past the end is refused before anything is written.
  expect_fmalloc_error(
    fmalloc_write(heap, "v", (n - 99999):(n + 200000), as.double(1:300000)), "fmalloc_bounds"
  )
  expect_fmalloc_error(fmalloc_write(heap, "v", 0:299999, as.double(1:300000)), "fmalloc_bounds")
  expect_fmalloc_error(fmalloc_write(heap, "v", 1:300000, as.character(1:300000)), "fmalloc_type")
  expect_identical(before, rep(0, 5))
  expect_true(identical(v[], want)) # the vector got earlier sees the writes
  where <- Rfmalloc:::.fmalloc_inspect(v)
  expect_true(identical(file_bytes(path, where$offset, 8 * n), vector_bytes(want)))
  rm(v, w)
  fmalloc_close(heap)
  invisible(gc())
  got <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    Rfmalloc::fmalloc_get("v", heap)[]
  }, args = list(path = path), libpath = .libPaths())
  expect_true(identical(got, want))
})

test_that("a large run past the file size limit (ulimit -f) is written, not a SIGXFSZ", {
  skip_on_os("windows")
  skip_if(Sys.which("bash") == "", "no bash")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.1)
  create_fmalloc_vector("double", 6e6, heap = heap, name = "big") # 48 MB
  fmalloc_close(heap)
  invisible(gc())
  # Under a limit of 40000 KiB: elements from 5.5e6 on lie past it.
  field <- run_under_file_limit(c(
    "library(Rfmalloc)",
    "heap <- fmalloc_open(commandArgs(TRUE)[1])",
    "r <- 5.5e6 + 0:199999",
    "cat('write', tryCatch({ fmalloc_write(heap, 'big', r, r * 2); 'ok' },",
    "  error = function(e) class(e)[1]), '\\n')",
    "cat('sum', sum(fmalloc_get('big', heap)[r] - r * 2), '\\n')",
    "fmalloc_close(heap)"
  ), path)
  expect_equal(field("write"), "ok")
  expect_equal(field("sum"), "0")
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  r <- 5.5e6 + 0:199999
  expect_true(identical(fmalloc_get("big", heap)[r], r * 2))
})

test_that("matrix cells by (i, j), dimnames, a matrix index or positions", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  fmalloc_write(heap, "m", 2:3, c("B", "C"), value = c(100L, 200L, 300L, 400L))
  fmalloc_write(heap, "m", cbind(c(1, 3), c(4, 1)), c(-1L, -2L))
  fmalloc_write(heap, "m", "r1", 1, value = 55L)
  fmalloc_write(heap, "m", 11, value = 0L)
  fmalloc_write(heap, "m", , "A") <- 9L # a whole column
  want <- matrix(1:12, 3, dimnames = list(c("r1", "r2", "r3"), c("A", "B", "C", "D")))
  want[2:3, c("B", "C")] <- c(100L, 200L, 300L, 400L)
  want[cbind(c(1, 3), c(4, 1))] <- c(-1L, -2L)
  want["r1", 1] <- 55L
  want[11] <- 0L
  want[, "A"] <- 9L
  expect_identical(reopened(h, "m")$m, want)
})

test_that("data frame cells by row and column, factors by level, dates, times, strings", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  fmalloc_write(heap, "df", 2, "price", 4.75)
  fmalloc_write(heap, "df", "x3", 5, 30) # row name, column number
  fmalloc_write(heap, "df", 1, "item", "coffee")
  fmalloc_write(heap, "df", 3, "item", factor("coffee"))
  fmalloc_write(heap, "df", 2, "day", as.Date("2024-02-29"))
  fmalloc_write(heap, "df", 1, "at", as.POSIXct("2024-06-01 08:30:00", tz = "Europe/Paris"))
  fmalloc_write(heap, "df", 1:3, "note", c("first row, now much longer", NA, "c"))
  fmalloc_write(heap, "df", 1, c("price", "qty"), list(1, 2L))
  got <- reopened(h, "df")$df
  expect_identical(as.character(got$item), c("coffee", "coffee", "coffee"))
  expect_identical(levels(got$item), c("coffee", "tea"))
  expect_identical(got$price, c(1, 4.75, 3.5))
  expect_identical(got$qty, c(2L, 2L, 30L))
  expect_identical(got$day, as.Date(c("2024-01-01", "2024-02-29", "2024-01-03")))
  expect_equal(as.numeric(got$at[1]), as.numeric(as.POSIXct("2024-06-01 06:30:00", tz = "UTC")))
  expect_identical(attr(got$at, "tzone"), "UTC")
  expect_identical(got$note, c("first row, now much longer", NA, "c"))
  expect_identical(rownames(got), c("x1", "x2", "x3"))
})

test_that("fmalloc_write() reaches the file where `x[i] <- v` would copy", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  df <- fmalloc_get("df", heap)
  print_out <- utils::capture.output(print(df), utils::str(df))
  shared <- df$price
  also <- shared # shared: `shared[1] <- 0` would copy
  fmalloc_write(heap, "df", 1, "price", 0)
  expect_identical(shared[1], 0)
  expect_identical(also[1], 0)
  expect_identical(df$price[1], 0)
  rm(df, shared, also)
  expect_identical(reopened(h, "df")$df$price, c(0, 4.25, 3.5))
})

test_that("a read-only heap refuses fmalloc_write() and fmalloc_set_attr()", {
  h <- local_objects()
  fmalloc_close(h$heap)
  invisible(gc())
  heap <- fmalloc_open(h$path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_fmalloc_error(fmalloc_write(heap, "counts", 1, 1L), "fmalloc_readonly")
  expect_fmalloc_error(fmalloc_set_attr(heap, "counts", "names", letters[1:5]), "fmalloc_readonly")
})

test_that("mclapply workers fill disjoint ranges of a named vector with fmalloc_write()", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  res <- callr::r(function() {
    library(Rfmalloc)
    path <- tempfile(fileext = ".bin")
    heap <- fmalloc_open(path, size_gb = 0.05)
    create_fmalloc_vector("double", 4000, heap = heap, name = "v")
    fmalloc_save(c("aaaa", "bbbb", "cccc", "dddd"), "s", heap)
    done <- parallel::mclapply(1:4, function(k) {
      rows <- (1000 * (k - 1) + 1):(1000 * k)
      fmalloc_write(heap, "v", rows, k * 1000 + seq_along(rows))
      fmalloc_write(heap, "s", k, strrep(letters[k], 2)) # shorter: fits in place
      # A longer string needs room in the pool: refused, nothing written.
      if (k == 4) return("none")
      tryCatch(fmalloc_write(heap, "s", k:4, c("x", rep("a string too long to fit", 4 - k))),
               error = function(e) class(e)[[1]])
    }, mc.cores = 2)
    fmalloc_close(heap)
    invisible(gc())
    out <- callr::r(function(path) {
      heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
      list(v = Rfmalloc::fmalloc_get("v", heap)[], s = Rfmalloc::fmalloc_get("s", heap)[])
    }, args = list(path = path), libpath = .libPaths())
    c(out, list(done = unlist(done)))
  }, libpath = .libPaths())
  expect_identical(res$v, unlist(lapply(1:4, function(k) k * 1000 + 1:1000)))
  expect_identical(res$done[1:3], rep("fmalloc_forked", 3))
  expect_identical(res$s, c("aa", "bb", "cc", "dd"))
})

test_that("fmalloc_set_attr() saves an attribute and keeps the data where they are", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  before <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("counts", heap))$block
  col_before <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("df", heap)$item)$block
  fmalloc_set_attr(heap, "counts", "names", c("a", "b", "c", "d", "e"))
  fmalloc_set_attr(heap, "df", "levels", c("COFFEE", "TEA"), j = "item")
  fmalloc_set_attr(heap, "x", "names", NULL)
  expect_identical(Rfmalloc:::.fmalloc_inspect(fmalloc_get("counts", heap))$block, before)
  expect_identical(Rfmalloc:::.fmalloc_inspect(fmalloc_get("df", heap)$item)$block, col_before)
  expect_fmalloc_error(fmalloc_set_attr(heap, "counts", "dim", c(2L, 2L)), "fmalloc_invalid", "dim")
  expect_fmalloc_error(fmalloc_set_attr(heap, "counts", "names", 1, j = 1), "fmalloc_invalid", "`j`")
  got <- reopened(h, c("counts", "df", "x"))
  expect_identical(got$counts, c(a = 1L, b = 2L, c = 3L, d = 4L, e = 5L))
  expect_identical(got$df$item, factor(c("TEA", "COFFEE", "TEA"), levels = c("COFFEE", "TEA")))
  expect_identical(got$x, c(1.5, 2.5, 3.5))
})

test_that("fmalloc_save(overwrite = TRUE) of a got object keeps its data blocks", {
  skip_if_not_installed("callr")
  h <- local_objects()
  heap <- h$heap
  s <- fmalloc_get("s", heap)
  block <- Rfmalloc:::.fmalloc_inspect(s)$block
  names(s) <- c("one", "two", "three")
  expect_true(is_fmalloc(s))
  fmalloc_save(s, "s", heap, overwrite = TRUE)
  expect_identical(Rfmalloc:::.fmalloc_inspect(fmalloc_get("s", heap))$block, block)
  rm(s)
  expect_identical(reopened(h, "s")$s, c(one = "tea", two = NA, three = "cocoa"))
})

test_that("is_fmalloc() is TRUE only while the data are the heap's", {
  h <- local_objects()
  heap <- h$heap
  x <- fmalloc_get("x", heap)
  expect_true(is_fmalloc(x))
  y <- x
  y[1] <- 0 # copy-on-modify: y is an ordinary vector
  expect_false(is_fmalloc(y))
  expect_true(is_fmalloc(x))
  counts <- fmalloc_get("counts", heap)
  counts[1] <- 1.5 # coerced to double: an ordinary vector
  expect_false(is_fmalloc(counts))
  s <- fmalloc_get("s", heap)
  invisible(sort(s)) # R expands the strings; writes still reach the pool
  expect_true(is_fmalloc(s))
  fmalloc_close(heap)
  rm(x, y, counts, s)
  invisible(gc())
  ro <- fmalloc_open(h$path, readonly = TRUE)
  on.exit(fmalloc_close(ro))
  v <- fmalloc_get("x", ro)
  expect_true(is_fmalloc(v))
  v[1] <- 0 # a read-only vector: R writes into a private copy
  expect_false(is_fmalloc(v))
  expect_identical(fmalloc_get("x", ro)[[1]], 1.5)
})

test_that("two fmalloc_get() of one name alias each other; copy = TRUE does not", {
  h <- local_objects()
  heap <- h$heap
  x1 <- fmalloc_get("x", heap)
  x2 <- fmalloc_get("x", heap)
  x_backup <- fmalloc_get("x", heap, copy = TRUE)
  x1[2] <- 100 # in place: x2 is a view of the same data
  expect_true(is_fmalloc(x1))
  expect_identical(x2, c(a = 1.5, b = 100, c = 3.5))
  expect_identical(x_backup, c(a = 1.5, b = 2.5, c = 3.5))
  expect_false(is_fmalloc(x_backup))

  a <- fmalloc_get("df", heap)
  b <- fmalloc_get("df", heap)
  backup <- fmalloc_get("df", heap, copy = TRUE)
  expect_false(any(vapply(backup, is_fmalloc, NA)))
  expect_true(all(vapply(a, is_fmalloc, NA)))
  fmalloc_write(heap, "df", 2, "price", 100)
  fmalloc_write(heap, "df", 1, "note", "changed")
  expect_identical(a$price, c(3.5, 100, 3.5))
  expect_identical(b$note, c("changed", "b", "c"))
  expect_identical(backup$price, c(3.5, 4.25, 3.5))
  expect_identical(backup$note, c("a", "b", "c"))
  expect_identical(attributes(backup), attributes(b))
  expect_fmalloc_error(fmalloc_get("df", heap, copy = NA), "fmalloc_invalid", "copy")
})

test_that("data.table objects are saved and come back as working data.tables", {
  skip_if_not_installed("data.table")
  skip_if_not_installed("callr")
  res <- callr::r(function() {
    library(Rfmalloc)
    library(data.table)
    path <- tempfile(fileext = ".bin")
    heap <- fmalloc_open(path, size_gb = 0.05)
    fmalloc_save(data.table(id = 3:1, v = c(1.5, 2.5, 3.5), s = c("a", "b", "c")), "dt", heap)
    DT <- fmalloc_get("dt", heap)
    mapped <- all(vapply(DT, is_fmalloc, NA))
    warned <- NULL
    withCallingHandlers({
      set(DT, 1L, "v", 99) # in place, into the file
      DT[, new := 1]
      setkey(DT, id)
    }, warning = function(w) {
      warned <<- conditionMessage(w)
      invokeRestart("muffleWarning")
    })
    before_save <- fmalloc_get("dt", heap)
    before_v <- before_save$v[]
    before_names <- names(before_save)
    fmalloc_save(DT, "dt", heap, overwrite = TRUE)
    fmalloc_close(heap)
    rm(DT, before_save)
    invisible(gc())
    after <- callr::r(function(path) {
      library(data.table)
      heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
      DT <- Rfmalloc::fmalloc_get("dt", heap, copy = TRUE)
      DT[, twice := v * 2]
      list(DT = DT, key = key(DT), class = class(DT), sel = DT[J(2L), v])
    }, args = list(path = path), libpath = .libPaths())
    list(mapped = mapped, warned = warned, before_v = before_v,
         before_names = before_names, after = after)
  }, libpath = .libPaths())
  expect_true(res$mapped)
  expect_null(res$warned)
  expect_identical(res$before_v, c(99, 2.5, 3.5)) # set() wrote into the file
  expect_identical(res$before_names, c("id", "v", "s")) # := lives in the session until saved
  expect_identical(res$after$class, c("data.table", "data.frame"))
  expect_identical(res$after$key, "id")
  expect_identical(res$after$DT$id, 1:3)
  expect_identical(res$after$DT$new, c(1, 1, 1))
  expect_identical(res$after$DT$twice, c(7, 5, 198))
  expect_identical(res$after$sel, 2.5)
})

test_that("fmalloc_set_attr() refuses fewer levels than a factor has (codes would point past them)", {
  heap <- local_heap()
  fmalloc_save(factor(c("x", "y")), "f", heap)
  err <- expect_fmalloc_error(fmalloc_set_attr(heap, "f", "levels", "x"), "fmalloc_invalid")
  expect_match(conditionMessage(err), "it has 2 levels, 1 given", fixed = TRUE)
  expect_identical(as.character(fmalloc_get("f", heap)), c("x", "y"))
  fmalloc_set_attr(heap, "f", "levels", c("x", "y", "z")) # adding is fine
  expect_identical(levels(fmalloc_get("f", heap)), c("x", "y", "z"))
  # In a data frame column too.
  fmalloc_save(data.frame(g = factor(c("a", "b"))), "d", heap)
  expect_fmalloc_error(fmalloc_set_attr(heap, "d", "levels", "a", j = "g"), "fmalloc_invalid")
})

test_that("arguments are evaluated before the object is looked up", {
  heap <- local_heap()
  fmalloc_save(c(5L, 6L, 7L, 8L), "old", heap)
  # `value` removes the object: not a write into no object.
  expect_fmalloc_error(
    fmalloc_write(heap, "old", 1:4, { fmalloc_rm("old", heap); rep(-9L, 4) }),
    "fmalloc_not_found"
  )
  # `value` overwrites the object: the write reaches the new one.
  fmalloc_save(1:4, "v", heap)
  fmalloc_write(heap, "v", 1:2, {
    fmalloc_save(c(10L, 20L, 30L, 40L), "v", heap, overwrite = TRUE)
    c(-7L, -7L)
  })
  expect_identical(fmalloc_get("v", heap, copy = TRUE), c(-7L, -7L, 30L, 40L))
  # The same for the positions.
  fmalloc_write(heap, "v", { fmalloc_save(1:4, "v", heap, overwrite = TRUE); 4L }, 0L)
  expect_identical(fmalloc_get("v", heap, copy = TRUE), c(1L, 2L, 3L, 0L))
  # fmalloc_set_attr(): the overwrite made while `value` is evaluated stays.
  fmalloc_save(1:10, "ab", heap)
  fmalloc_set_attr(heap, "ab", "names", {
    fmalloc_save(c(-1L, -2L), "ab", heap, overwrite = TRUE)
    c("a", "b")
  })
  expect_identical(fmalloc_get("ab", heap, copy = TRUE), c(a = -1L, b = -2L))
  expect_fmalloc_error(fmalloc_set_attr(heap, "ab", "names"), "fmalloc_invalid")
})

test_that("a string written twice at one position ends with the last value, as in R", {
  heap <- local_heap()
  fmalloc_save(c("a", "b", "c"), "s", heap)
  fmalloc_write(heap, "s", c(2, 1, 2, 3, 2), c("long string one", "x", "y", "zz", "second-to-none"))
  expect_identical(fmalloc_get("s", heap, copy = TRUE), c("x", "second-to-none", "zz"))
  ref <- c("a", "b", "c")
  ref[c(2, 1, 2, 3, 2)] <- c("long string one", "x", "y", "zz", "second-to-none")
  expect_identical(fmalloc_get("s", heap, copy = TRUE), ref)
})

test_that("automatic row names select rows of a data frame, as df['2', 'b'] does", {
  heap <- local_heap()
  fmalloc_save(data.frame(a = 1:3, b = c(1.5, 2.5, 3.5)), "d", heap)
  fmalloc_write(heap, "d", "2", "b", value = 7)
  fmalloc_write(heap, "d", c("3", "1"), "a", value = c(30L, 10L))
  expect_identical(fmalloc_get("d", heap, copy = TRUE), data.frame(a = c(10L, 2L, 30L), b = c(1.5, 7, 3.5)))
  expect_fmalloc_error(fmalloc_write(heap, "d", "4", "b", value = 1), "fmalloc_bounds")
  expect_fmalloc_error(fmalloc_write(heap, "d", "02", "b", value = 1), "fmalloc_bounds")
  # Integer row names a subset keeps (3:5): "3" is the row named 3, the
  # first, as sub["3", "v"] <- -1 in R (it wrote the third row).
  df <- data.frame(id = 1:5, v = c(10, 20, 30, 40, 50))
  sub <- df[df$id >= 3, ]
  fmalloc_save(sub, "sub", heap)
  fmalloc_write(heap, "sub", "3", "v", value = -1)
  fmalloc_write(heap, "sub", c("5", "4"), "v", value = c(-5, -4))
  sub["3", "v"] <- -1
  sub[c("5", "4"), "v"] <- c(-5, -4)
  expect_identical(fmalloc_get("sub", heap, copy = TRUE), sub)
  expect_fmalloc_error(fmalloc_write(heap, "sub", "1", "v", value = 0), "fmalloc_bounds", "no row named so")
  expect_identical(fmalloc_get("sub", heap, copy = TRUE), sub)
})

test_that("an empty j selects every column of a matrix, as m[1, ] <- v", {
  heap <- local_heap()
  fmalloc_save(matrix(1:6, 2), "m", heap)
  ref <- matrix(1:6, 2)
  fmalloc_write(heap, "m", 1, , value = 0L)
  ref[1, ] <- 0L
  expect_identical(fmalloc_get("m", heap, copy = TRUE), ref)
  fmalloc_write(heap, "m", 2, ) <- 7:9
  ref[2, ] <- 7:9
  expect_identical(fmalloc_get("m", heap, copy = TRUE), ref)
  fmalloc_write(heap, "m", , , value = 1L)
  ref[, ] <- 1L
  expect_identical(fmalloc_get("m", heap, copy = TRUE), ref)
  # Without j at all, i is positions (m[5] <- 55L), as before.
  fmalloc_write(heap, "m", 5, value = 55L)
  ref[5] <- 55L
  expect_identical(fmalloc_get("m", heap, copy = TRUE), ref)
  # A vector has no columns; a missing value is still an error.
  fmalloc_save(1:3, "v", heap)
  expect_fmalloc_error(fmalloc_write(heap, "v", 1, , value = 0L), "fmalloc_invalid")
  expect_fmalloc_error(fmalloc_write(heap, "m", 1, ), "fmalloc_invalid", "value")
  # Data frames as before: an empty j is every column.
  fmalloc_save(data.frame(a = 1:2, b = c(1.5, 2.5)), "d", heap)
  fmalloc_write(heap, "d", 2, , value = list(9L, 9.5))
  expect_identical(fmalloc_get("d", heap, copy = TRUE), data.frame(a = c(1L, 9L), b = c(1.5, 9.5)))
})

test_that("a damaged string pool met by a string write is fmalloc_corrupt", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("a", "b", "c"), "s", heap)
  fmalloc_close(heap)
  invisible(gc())
  bytes <- readBin(path, "raw", file.size(path))
  at <- grepRaw("FMSTRPL1", bytes, fixed = TRUE)
  expect_length(at, 1L)
  bytes[at + 63 + 1:8] <- as.raw(0xff) # element 1's string offset: 2^64 - 1
  writeBin(bytes, path)
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  expect_fmalloc_error(fmalloc_get("s", heap)[1], "fmalloc_corrupt")
  # A longer string makes the pool grow, which copies the strings: the
  # damage was reported as fmalloc_invalid ("an argument is not valid").
  expect_fmalloc_error(fmalloc_write(heap, "s", 1, strrep("L", 300)), "fmalloc_corrupt", "string pool")
})
