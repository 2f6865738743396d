# The user API of vectors: init_fmalloc(), create_fmalloc_vector(),
# cleanup_fmalloc(), is_fmalloc(), and the seed README examples.

test_that("the seed README's first example runs and gives the same values", {
  alloc_file <- withr::local_tempfile(fileext = ".bin")
  expect_true(init_fmalloc(alloc_file))
  v_int <- create_fmalloc_vector("integer", 10)
  v_num <- create_fmalloc_vector("numeric", 10)
  v_int[1:3] <- c(1L, 2L, 3L)
  v_num[1:3] <- c(1.1, 2.2, 3.3)
  expect_identical(v_int[1:3], c(1L, 2L, 3L))
  expect_identical(v_num[1:3], c(1.1, 2.2, 3.3))
  expect_output(print(v_int[1:3]), "[1] 1 2 3", fixed = TRUE)
  expect_output(print(v_num[1:3]), "[1] 1.1 2.2 3.3", fixed = TRUE)
  expect_true(is_fmalloc(v_int) && is_fmalloc(v_num))
  rm(v_int, v_num)
  gc()
  expect_true(cleanup_fmalloc())
  expect_true(file.remove(alloc_file))
})

test_that("the seed README's 50 GB example runs on a sparse file", {
  # Needs a sparse 50 GB file: NTFS files are not sparse unless marked so, so
  # on Windows the heap would take (and need) 50 GB of disk.
  skip_on_os("windows")
  huge_file <- withr::local_tempfile(fileext = ".bin")
  # (How long this takes is measured by bench/open.R.)
  expect_true(init_fmalloc(huge_file, size_gb = 50))
  expect_gte(file.size(huge_file), 50 * 1024^3)
  big_vec1 <- create_fmalloc_vector("integer", 1e6)
  big_vec3 <- create_fmalloc_vector("numeric", 5e5)
  big_vec1[1:1e6] <- 1:1e6
  big_vec3[1:5e5] <- (1:5e5) * 1.5
  expect_identical(big_vec1[999996:1000000], 999996:1000000)
  expect_identical(big_vec3[], (1:5e5) * 1.5)
  expect_true(is_fmalloc(big_vec1) && is_fmalloc(big_vec3))
  rm(big_vec1, big_vec3)
  gc()
  cleanup_fmalloc()
  expect_true(file.remove(huge_file))
})

test_that("init_fmalloc() reports whether the file was new, quietly unless verbose", {
  path <- withr::local_tempfile(fileext = ".bin")
  withr::defer(cleanup_fmalloc())
  expect_silent(created <- init_fmalloc(path, size_gb = 0.01))
  expect_true(created)
  # Invisible, like cleanup_fmalloc(): nothing printed at the console.
  expect_false(withVisible(init_fmalloc(path))$visible)
  expect_silent(expect_false(init_fmalloc(path)))
  expect_silent(x <- create_fmalloc_vector("double", 5))
  expect_message(init_fmalloc(path, verbose = TRUE), "opened heap")
  withr::with_options(list(fmalloc.verbose = TRUE), {
    expect_message(suppressMessages(cleanup_fmalloc(), classes = "fmalloc_pinned"), "closed heap")
  })
  expect_silent(expect_false(cleanup_fmalloc()))
  expect_error(create_fmalloc_vector("double", 5), class = "fmalloc_closed",
               regexp = "no default heap is open; call init_fmalloc")
  expect_identical(x[], double(5))
})

test_that("every type is created zero-filled, as an ordinary vector, on both paths", {
  local_default_heap()
  zero <- list(
    logical = logical(7), integer = integer(7), numeric = double(7),
    double = double(7), complex = complex(7), raw = raw(7),
    character = rep(NA_character_, 7)
  )
  for (method in methods) {
    for (type in names(zero)) {
      x <- create_fmalloc_vector(type, 7, method = method)
      expect_identical(x, zero[[type]], info = paste(type, method))
      expect_identical(x[], zero[[type]], info = paste(type, method))
      expect_null(attributes(x))
      expect_false(is.object(x))
      expect_true(is_fmalloc(x), info = paste(type, method))
      expect_identical(Rfmalloc:::.fmalloc_inspect(x)$method, method)
    }
  }
})

test_that("vectors behave as ordinary vectors in base functions", {
  local_default_heap()
  for (method in methods) {
    x <- create_fmalloc_vector("double", 100, method = method)
    x[] <- seq_len(100) / 4
    ref <- seq_len(100) / 4
    expect_identical(sum(x), sum(ref))
    expect_identical(mean(x), mean(ref))
    expect_identical(rev(x), rev(ref))
    expect_identical(sort(x, decreasing = TRUE), sort(ref, decreasing = TRUE))
    expect_identical(x[x > 20], ref[ref > 20])
    expect_identical(cumsum(x), cumsum(ref))
    expect_identical(as.integer(x), as.integer(ref))
    expect_identical(matrix(x, 10), matrix(ref, 10))
    expect_identical(serialize(x, NULL), serialize(ref, NULL))
    expect_identical(unserialize(serialize(x, NULL)), ref)
    i <- create_fmalloc_vector("integer", 10, method = method)
    i[] <- 10:1
    expect_identical(order(i), 10:1)
    expect_identical(table(i %% 2L), table(10:1 %% 2L))
  }
})

test_that("init = FALSE skips the fill; lengths 0 and 1 end up in the heap", {
  local_default_heap()
  for (method in methods) {
    for (type in c("logical", "integer", "double", "complex", "raw", "character")) {
      x0 <- create_fmalloc_vector(type, 0, method = method)
      expect_identical(length(x0), 0L)
      expect_identical(typeof(x0), type)
      expect_true(is_fmalloc(x0))
      x1 <- create_fmalloc_vector(type, 1, method = method)
      expect_identical(length(x1), 1L)
      expect_true(is_fmalloc(x1), info = paste(type, method))
      # R keeps length 0 and length 1 logical/integer/double to itself,
      # so those are ALTREP whatever the method asked.
      routed <- method == "classic" && type %in% c("complex", "raw", "character")
      expect_identical(Rfmalloc:::.fmalloc_inspect(x1)$method,
                       if (routed) "classic" else "altrep")
      expect_identical(Rfmalloc:::.fmalloc_inspect(x0)$method, "altrep")
    }
    y <- create_fmalloc_vector("integer", 5, method = method, init = FALSE)
    y[] <- 5:1
    expect_identical(y[], 5:1)
  }
})

test_that("arguments are checked with classed errors", {
  local_default_heap()
  expect_error(create_fmalloc_vector("list", 3), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector(c("double", "integer"), 3), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", -1), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", 1.5), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", NA), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", 3, method = "mmap"), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", 3, init = NA), class = "fmalloc_invalid")
  expect_error(create_fmalloc_vector("double", 3, heap = "x"), class = "fmalloc_invalid")
  expect_error(init_fmalloc(""), class = "fmalloc_invalid")
  expect_error(init_fmalloc(tempfile(), size_gb = -1), class = "fmalloc_invalid")
  e <- tryCatch(create_fmalloc_vector("list", 3), error = identity)
  expect_match(conditionMessage(e), "^Rfmalloc: ")
  expect_identical(conditionCall(e)[[1]], quote(create_fmalloc_vector))
})

test_that("the classic method is there, or refused with a class when built without it", {
  local_default_heap()
  if (fmalloc_has_classic()) {
    x <- create_fmalloc_vector("double", 10, method = "classic")
    expect_identical(Rfmalloc:::.fmalloc_inspect(x)$method, "classic")
  } else {
    e <- expect_error(create_fmalloc_vector("double", 10, method = "classic"),
                      class = "fmalloc_unsupported")
    expect_match(conditionMessage(e), "RFMALLOC_CLASSIC=false", fixed = TRUE)
    # The default method keeps working, its data in the heap.
    x <- create_fmalloc_vector("double", 10)
    x[3] <- 2.5
    expect_identical(Rfmalloc:::.fmalloc_inspect(x)$method, "altrep")
    expect_identical(x[3], 2.5)
  }
})

test_that("is_fmalloc() is FALSE for ordinary vectors and for copies", {
  local_default_heap()
  expect_false(is_fmalloc(1:10))
  expect_false(is_fmalloc(NULL))
  expect_false(is_fmalloc(list(1)))
  expect_false(is_fmalloc(mean))
  expect_false(is_fmalloc(c(1, 2, 3)))
  for (method in methods) {
    x <- create_fmalloc_vector("double", 10, method = method)
    expect_true(is_fmalloc(x))
    expect_false(is_fmalloc(x + 1))
    expect_false(is_fmalloc(c(x, 1)))
    expect_null(Rfmalloc:::.fmalloc_inspect(x + 1))
  }
})

test_that("vectors can be created in a heap handle other than the default", {
  path <- withr::local_tempfile(fileext = ".bin")
  heap <- fmalloc_open(path, size_gb = 0.01)
  withr::defer(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  for (method in methods) {
    x <- create_fmalloc_vector("integer", 4, heap = heap, method = method)
    x[] <- 1:4
    info <- Rfmalloc:::.fmalloc_inspect(x)
    expect_identical(info$path, normalizePath(path))
    expect_identical(x[], 1:4)
  }
})

test_that("a read-only heap refuses to create vectors", {
  path <- withr::local_tempfile(fileext = ".bin")
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  heap <- fmalloc_open(path, readonly = TRUE)
  withr::defer(fmalloc_close(heap))
  expect_error(create_fmalloc_vector("double", 3, heap = heap), class = "fmalloc_readonly")
})

test_that("subsetting gives what it gives on ordinary vectors", {
  local_default_heap()
  vals <- list(
    logical = c(TRUE, NA, FALSE, TRUE, FALSE), integer = c(5L, NA, -3L, 0L, 9L),
    double = c(1.5, NA, -Inf, NaN, 0), complex = c(1i, NA, 2 + 0i, 0i, -1i),
    raw = as.raw(c(1, 2, 0, 255, 7)), character = c("a", NA, "\u00e9", "", "z")
  )
  subs <- list(1:5, c(5, 1, 1), c(2L, NA, 7L), c(2.9, 0, 6, NA), -1, -(1:5), 0,
               c(TRUE, FALSE), c(TRUE, NA), integer(0), 5:1, seq(1, 5, by = 2))
  for (method in methods) {
    for (type in names(vals)) {
      x <- create_fmalloc_vector(type, 5, method = method)
      x[] <- vals[[type]]
      for (s in subs) {
        expect_identical(x[s], vals[[type]][s], info = paste(type, method, deparse(s)))
      }
      big <- create_fmalloc_vector(type, 3000, method = method)
      ref <- vector(typeof(vals[[type]]), 3000)
      if (type == "character") ref[] <- NA
      idx <- c(3000:1, 2999, NA, 5000)
      expect_identical(big[idx], ref[idx])
      expect_identical(big[seq_len(2500)], ref[seq_len(2500)])
      names(x) <- letters[1:5]
      expect_identical(x[c("b", "e")], setNames(vals[[type]][c(2, 5)], c("b", "e")))
    }
  }
})

test_that("init = FALSE still gives NA strings and valid logicals (both methods)", {
  heap <- local_heap()
  methods <- if (fmalloc_has_classic()) c("altrep", "classic") else "altrep"
  for (m in methods) {
    # Reused space that held 0xff bytes.
    junk <- create_fmalloc_vector("raw", 4096, heap = heap, method = m)
    junk[] <- as.raw(255)
    rm(junk)
    gc()
    l <- create_fmalloc_vector("logical", 1000, heap = heap, method = m, init = FALSE)
    expect_identical(l[], logical(1000), info = m)
    s <- create_fmalloc_vector("character", 5, heap = heap, method = m, init = FALSE)
    expect_identical(s[], rep(NA_character_, 5), info = m)
  }
})

test_that("a required argument left out is fmalloc_invalid naming it, for every function", {
  heap <- local_default_heap()
  ns <- asNamespace("Rfmalloc")
  required <- function(f) {
    a <- formals(f)
    setdiff(names(a)[vapply(a, function(v) identical(v, quote(expr = )), NA)], "...")
  }
  checked <- 0L
  for (name in getNamespaceExports("Rfmalloc")) {
    f <- get(name, ns)
    if (!is.function(f) || length(required(f)) == 0L) next
    err <- expect_fmalloc_error(do.call(f, list()), "fmalloc_invalid")
    expect_match(conditionMessage(err), sprintf("arguments? `%s`", required(f)[[1]]), info = name)
    checked <- checked + 1L
  }
  expect_gt(checked, 15L)
  err <- expect_fmalloc_error(create_fmalloc_vector(, 3), "fmalloc_invalid")
  expect_identical(conditionMessage(err), "Rfmalloc: argument `type` is missing, with no default")
  err <- expect_fmalloc_error(create_fmalloc_vector("double"), "fmalloc_invalid")
  expect_match(conditionMessage(err), "argument `length` is missing", fixed = TRUE)
  err <- expect_fmalloc_error(fmalloc_set_attr(heap), "fmalloc_invalid")
  expect_match(conditionMessage(err), "arguments `name` and `which` are missing", fixed = TRUE)
  # The replacement form called as a function, without its value.
  expect_fmalloc_error(`fmalloc_write<-`(tempfile(), "x", 1), "fmalloc_invalid", "argument `value` is missing")
  expect_fmalloc_error(fmalloc_save(1), "fmalloc_invalid", "argument `name` is missing")
  # A missing argument passed on from the caller's own missing argument.
  wrapper <- function(n) create_fmalloc_vector("double", n)
  expect_fmalloc_error(wrapper(), "fmalloc_invalid", "argument `length` is missing")
  expect_identical(nrow(fmalloc_ls()), 0L)
})
