# Where the data are: in-place writes reach the file, copies do not, long
# vectors work. The file is read by a second R process.

test_that("in-place writes land in the file, on both paths and every type", {
  path <- local_default_heap()
  values <- list(
    logical = c(TRUE, NA, FALSE), integer = c(1L, NA, -7L),
    double = c(1.5, NA, -Inf), complex = c(1 + 2i, NA, 0-1i),
    raw = as.raw(c(1, 0xfe, 7))
  )
  got <- list()
  for (method in methods) {
    for (type in names(values)) {
      x <- create_fmalloc_vector(type, 5, method = method)
      x[2:4] <- values[[type]]
      expect_true(is_fmalloc(x), info = paste(type, method))
      info <- Rfmalloc:::.fmalloc_inspect(x)
      expect_identical(info$path, normalizePath(path))
      got[[paste(type, method)]] <- list(x = x, info = info, want = vector_bytes(x[]))
    }
  }
  # One second process reads all of them.
  offsets <- vapply(got, function(g) g$info$offset, 0)
  sizes <- vapply(got, function(g) length(g$want), 0)
  bytes <- callr::r(function(path, offsets, sizes) {
    con <- file(path, "rb")
    on.exit(close(con))
    Map(function(o, n) { seek(con, o); readBin(con, "raw", n) }, offsets, sizes)
  }, args = list(path = path, offsets = offsets, sizes = sizes))
  for (k in names(got)) {
    expect_identical(bytes[[k]], got[[k]]$want, info = k)
  }
})

test_that("copy-on-modify: a shared vector is copied and the file keeps the original", {
  path <- local_default_heap()
  for (method in methods) {
    x <- create_fmalloc_vector("double", 4, method = method)
    x[] <- c(1, 2, 3, 4)
    y <- x            # shared now
    y[1] <- 100       # R duplicates y first
    expect_identical(x[], c(1, 2, 3, 4))
    expect_identical(y, c(100, 2, 3, 4))
    expect_true(is_fmalloc(x))
    expect_false(is_fmalloc(y))   # the copy is an ordinary vector
    info <- Rfmalloc:::.fmalloc_inspect(x)
    expect_identical(file_bytes(path, info$offset, 32), vector_bytes(c(1, 2, 3, 4)))

    # Modification of an argument inside a function copies too.
    f <- function(v) { v[2] <- -1; v }
    z <- f(x)
    expect_identical(z, c(1, -1, 3, 4))
    expect_identical(x[], c(1, 2, 3, 4))
  }
})

test_that("duplicating an ALTREP vector gives an ordinary vector with the attributes", {
  local_default_heap()
  for (type in c("logical", "integer", "double", "complex", "raw", "character")) {
    x <- create_fmalloc_vector(type, 6)
    names(x) <- letters[1:6]
    expect_true(is_fmalloc(x), info = type)
    d <- duplicate_of(x)
    expect_false(is_fmalloc(d))
    expect_identical(d, x)
    expect_identical(names(d), letters[1:6])
  }
})

test_that("a long raw vector (2^31 + 10 bytes) works on both paths", {
  skip_on_cran()
  path <- local_default_heap()
  n <- 2^31 + 10
  for (method in methods) {
    x <- create_fmalloc_vector("raw", n, method = method, init = FALSE)
    expect_identical(length(x), n)
    expect_identical(Rfmalloc:::.fmalloc_inspect(x)$method, method)
    x[n] <- as.raw(0xab)
    x[2^31 + 1] <- as.raw(0x12)
    x[1] <- as.raw(0x01)
    expect_identical(x[c(1, 2^31 + 1, n)], as.raw(c(0x01, 0x12, 0xab)))
    info <- Rfmalloc:::.fmalloc_inspect(x)
    expect_identical(file_bytes(path, info$offset + n - 1, 1), as.raw(0xab))
    expect_true(is_fmalloc(x))
    rm(x)
    gc()
  }
})

test_that("vectors of a read-only heap are never written through the mapping", {
  path <- withr::local_tempfile(fileext = ".bin")
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c(1, 2, 3), "d", heap = heap)
  fmalloc_save(c("a", "\u00e9"), "s", heap = heap)
  fmalloc_close(heap)
  gc()
  ro <- fmalloc_open(path, readonly = TRUE)
  withr::defer(suppressMessages(fmalloc_close(ro), classes = "fmalloc_pinned"))
  d <- fmalloc_get("d", heap = ro)
  s <- fmalloc_get("s", heap = ro)
  info <- Rfmalloc:::.fmalloc_inspect(d)
  expect_true(info$readonly)
  d[2] <- 20   # R asks for a writable pointer: it gets a private copy
  s[1] <- "b"
  expect_identical(d, c(1, 20, 3))
  expect_identical(s, c("b", "\u00e9"))
  expect_identical(file_bytes(path, info$offset, 24), vector_bytes(c(1, 2, 3)))
  expect_identical(fmalloc_get("d", heap = ro), c(1, 2, 3))
  expect_identical(fmalloc_get("s", heap = ro), c("a", "\u00e9"))
  expect_error(create_fmalloc_vector("double", 1, heap = ro), class = "fmalloc_readonly")
})

test_that("inspect shows class, heap, block, offset and length", {
  path <- local_default_heap()
  x <- create_fmalloc_vector("double", 10)
  info <- Rfmalloc:::.fmalloc_inspect(x)
  expect_output(
    .Internal(inspect(x)),
    sprintf("fmalloc_real (heap '%s', block %.0f, offset %.0f, length 10)",
            normalizePath(path), info$block, info$offset),
    fixed = TRUE
  )
  s <- create_fmalloc_vector("character", 2)
  expect_output(.Internal(inspect(s)), "fmalloc_string (heap", fixed = TRUE)
})
