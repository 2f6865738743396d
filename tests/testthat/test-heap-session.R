# A heap you cannot trip over (issue 12): closing says what still holds the
# file, local_/with_fmalloc_heap(), lock errors that say who holds the file,
# and print/format/summary/`$`/names of a heap handle.

# Evaluates `expr` as user code does: from the global environment, not from
# this package's namespace (which testthat's test environments inherit).
as_user <- function(expr, ...) {
  eval(substitute(expr), list(...), globalenv())
}

test_that("fmalloc_close() collects garbage first: no message when nothing holds the file", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  v <- create_fmalloc_vector("double", 10, heap = heap)
  rm(v) # garbage, not yet collected
  expect_silent(fmalloc_close(heap))
  # The file is free: another process can open it for writing.
  skip_if_not_installed("callr")
  ok <- callr::r(function(path) {
    Rfmalloc::fmalloc_close(Rfmalloc::fmalloc_open(path))
    TRUE
  }, list(path = path), libpath = .libPaths())
  expect_true(ok)
})

test_that("fmalloc_close() names .Last.value when it is what holds the file", {
  skip_on_cran()
  # Top-level calls (only they set .Last.value): a script, not a test.
  path <- local_heap_path()
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(c(
    "library(Rfmalloc)",
    sprintf("h <- fmalloc_open('%s', size_gb = 0.01)", gsub("\\\\", "/", path)),
    "x <- 1:10; attr(x, 'junk') <- 'j'",
    "fmalloc_save(x, 'x', h)",
    "fmalloc_close(h)"
  ), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), shQuote(script),
                 stdout = TRUE, stderr = TRUE, env = paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)))
  text <- paste(out, collapse = " ")
  expect_match(text, "1 vector made from it is still in use", fixed = TRUE)
  expect_match(text, "R keeps it as .Last.value until the next top-level call has run; gc() then releases the file",
               fixed = TRUE)
})

test_that("fmalloc_close() says how many vectors still hold the file and what to do", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  a <- create_fmalloc_vector("double", 10, heap = heap)
  b <- create_fmalloc_vector("integer", 10, heap = heap)
  msg <- expect_message(fmalloc_close(heap), class = "fmalloc_pinned")
  expect_s3_class(msg, c("fmalloc_pinned", "fmalloc_message", "message", "condition"), exact = TRUE)
  text <- conditionMessage(msg)
  expect_match(text, "2 vectors made from it are still in use in this session and keep the file open (for writing)", fixed = TRUE)
  expect_match(text, path, fixed = TRUE)
  expect_match(text, "rm() them", fixed = TRUE)
  # Closing again says nothing (nothing was closed).
  expect_silent(fmalloc_close(heap))
  rm(a, b)
  invisible(gc())
})

test_that("a second open in this session after close says vectors hold the file, never 'use that heap handle'", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  v <- create_fmalloc_vector("double", 10, heap = heap)
  suppressMessages(fmalloc_close(heap))
  err <- expect_fmalloc_error(fmalloc_open(path, readonly = TRUE), "fmalloc_locked")
  text <- conditionMessage(err)
  expect_no_match(text, "use that heap handle", fixed = TRUE)
  expect_match(text, "closed its heap handle, but 1 vector made from it is still alive", fixed = TRUE)
  expect_match(text, "rm() them and run gc()", fixed = TRUE)

  # With the handle still open, it says so.
  heap2 <- fmalloc_open(path)
  err <- expect_fmalloc_error(fmalloc_open(path, readonly = TRUE), "fmalloc_locked")
  expect_match(conditionMessage(err), "heap handle that is still open: use that handle", fixed = TRUE)
  msg <- expect_message(fmalloc_close(heap2), class = "fmalloc_pinned")
  expect_match(conditionMessage(msg), "1 vector made from it is still in use", fixed = TRUE)
  rm(v)
  invisible(gc())
  # Released: it opens read-only now.
  heap3 <- fmalloc_open(path, readonly = TRUE)
  expect_identical(summary(heap3)$mode, "read-only")
  fmalloc_close(heap3)
})

test_that("a lock held by another process names that process", {
  skip_if_not_installed("callr")
  skip_on_cran()
  path <- local_heap_path()
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  proc <- local_holder(path)
  err <- expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked")
  text <- conditionMessage(err)
  expect_match(text, "open for writing", fixed = TRUE)
  expect_match(text, "fmalloc_close()", fixed = TRUE)
  if (Sys.info()[["sysname"]] == "Linux" && file.exists("/proc/locks")) {
    expect_match(text, sprintf("process %d", proc$get_pid()), fixed = TRUE)
  }
})

test_that("a reader in another process: the message suggests readonly = TRUE", {
  skip_if_not_installed("callr")
  skip_on_cran()
  skip_if_not(Sys.info()[["sysname"]] == "Linux" && file.exists("/proc/locks"))
  path <- local_heap_path()
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  proc <- local_holder(path, readonly = TRUE)
  err <- expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked")
  text <- conditionMessage(err)
  expect_match(text, sprintf("process %d", proc$get_pid()), fixed = TRUE)
  expect_match(text, "open read-only", fixed = TRUE)
  expect_match(text, "readonly = TRUE", fixed = TRUE)
  heap <- fmalloc_open(path, readonly = TRUE)
  fmalloc_close(heap)
})

test_that("local_fmalloc_heap() opens a default heap for the calling function and closes it", {
  path <- local_heap_path()
  seen <- NULL
  f <- function() {
    heap <- local_fmalloc_heap(path, size_gb = 0.01)
    fmalloc_save(1:3, "x", overwrite = TRUE) # the default heap
    seen <<- heap
    fmalloc_get("x")[]
  }
  expect_identical(f(), 1:3)
  expect_true(as_user(format(h), h = seen) == sprintf("<fmalloc_heap> %s (closed)", normalizePath(path)))
  expect_fmalloc_error(fmalloc_get("x"), "fmalloc_closed", "no default heap")
  # The previous default heap comes back.
  other <- local_heap_path()
  init_fmalloc(other, size_gb = 0.01)
  withr::defer(cleanup_fmalloc())
  f()
  expect_identical(fmalloc_info()$path, normalizePath(other))
  # At top level there is no function to close it: an error that says so.
  err <- expect_fmalloc_error(local_fmalloc_heap(path, .local_envir = globalenv()), "fmalloc_invalid")
  expect_match(conditionMessage(err), "with_fmalloc_heap", fixed = TRUE)
})

test_that("with_fmalloc_heap() evaluates code with the heap open, then closes it", {
  path <- local_heap_path()
  # The value comes from the heap: closing says it keeps the file open.
  expect_message(out <- with_fmalloc_heap(path, {
    fmalloc_save(c(a = 1), "x")
    fmalloc_get("x")
  }, size_gb = 0.01), class = "fmalloc_pinned")
  expect_identical(out, c(a = 1))
  expect_fmalloc_error(fmalloc_get("x"), "fmalloc_closed")
  rm(out)
  invisible(gc())
  expect_true(with_fmalloc_heap(path, fmalloc_exists("x"), readonly = TRUE))
  # Closed even when code fails.
  expect_error(with_fmalloc_heap(path, stop("boom")), "boom")
  heap <- fmalloc_open(path) # would be fmalloc_locked if still open read-only
  fmalloc_close(heap)
})

test_that("the scoped heap helpers restore the caller's default whatever the code did to it", {
  path_a <- local_heap_path()
  path_b <- local_heap_path()
  init_fmalloc(path_a, size_gb = 0.01)
  withr::defer(cleanup_fmalloc())
  fmalloc_save(1:2, "in_a")
  # A writable open in another process: fmalloc_locked while `path` is open.
  opens_elsewhere <- function(path) {
    callr::r(function(path) {
      h <- tryCatch(Rfmalloc::fmalloc_open(path), error = function(e) class(e)[[1]])
      if (is.character(h)) h else { Rfmalloc::fmalloc_close(h); "opened" }
    }, list(path), libpath = .libPaths())
  }
  default_is_a <- function() {
    expect_identical(fmalloc_info()$path, normalizePath(path_a))
    expect_identical(fmalloc_get("in_a")[], 1:2)
  }
  # cleanup_fmalloc() in the scope closes the scoped heap, not the caller's.
  f <- function() {
    local_fmalloc_heap(path_b, size_gb = 0.01)
    cleanup_fmalloc()
  }
  f()
  default_is_a()
  with_fmalloc_heap(path_b, cleanup_fmalloc())
  default_is_a()
  # init_fmalloc() in the scope: its heap ends with the scope.
  g <- function(path) {
    local_fmalloc_heap(path_b)
    init_fmalloc(path)
    fmalloc_save(3L, "from_g", overwrite = TRUE)
    invisible(NULL) # not the saved vector, which would keep the file open
  }
  g(path_b)
  default_is_a()
  expect_identical(opens_elsewhere(path_b), "opened")
  g(path_a) # a second handle of the caller's own heap
  default_is_a()
  expect_identical(fmalloc_get("from_g")[], 3L)
})

test_that("print() returns its argument invisibly, format() returns lines", {
  heap <- local_heap()
  fmalloc_save(1:10, "x", heap)
  capture.output(out <- withVisible(print(heap)))
  expect_false(out$visible)
  expect_identical(out$value, heap)
  lines <- format(heap)
  expect_type(lines, "character")
  expect_identical(lines[[1]], sprintf("<fmalloc_heap> %s", fmalloc_info(heap)$path))
  expect_true(any(grepl("^  mode: +read-write$", lines)))
  expect_true(any(grepl("^  disk: ", lines)))
  expect_true(any(grepl("^  objects: +1$", lines)))
  expect_output(print(heap), "objects: 1", fixed = TRUE)
})

test_that("summary() of a heap is an object with its own print method", {
  heap <- local_heap()
  fmalloc_save(data.frame(a = 1:3), "df", heap)
  s <- summary(heap)
  expect_s3_class(s, "summary.fmalloc_heap")
  expect_identical(s$path, fmalloc_info(heap)$path)
  expect_identical(s$mode, "read-write")
  expect_identical(s$n_objects, 1)
  expect_identical(s$objects$name, "df")
  expect_true(s$size >= s$used)
  if (.Platform$OS.type == "unix") expect_true(s$disk > 0 && s$disk <= s$size)
  capture.output(out <- withVisible(print(s)))
  expect_false(out$visible)
  expect_output(print(s), "df", fixed = TRUE)
  expect_output(print(s), "mode:    read-write", fixed = TRUE)
})

test_that("a handle that is not of this session prints as such instead of failing", {
  heap <- local_heap()
  rds <- withr::local_tempfile(fileext = ".rds")
  saveRDS(heap, rds)
  restored <- readRDS(rds)
  expect_match(format(restored), "not a heap handle of this R session", fixed = TRUE)
  expect_identical(summary(restored)$mode, NA_character_)
})

test_that("heap$x, heap[['x']] and names(heap) are the heap's objects", {
  heap <- local_heap()
  fmalloc_save(c(a = 1, b = 2), "x", heap)
  fmalloc_save(letters, "y", heap)
  expect_identical(as_user(h$x, h = heap), c(a = 1, b = 2))
  expect_identical(as_user(h[["y"]], h = heap), letters)
  expect_true(as_user(is_fmalloc(h$x), h = heap))
  expect_identical(as_user(names(h), h = heap), c("x", "y"))
  expect_fmalloc_error(as_user(h$nope, h = heap), "fmalloc_not_found", "nope")
  err <- expect_fmalloc_error(as_user(h$z <- 1, h = heap), "fmalloc_invalid")
  expect_match(conditionMessage(err), "fmalloc_save(value, \"z\", heap)", fixed = TRUE)
  expect_fmalloc_error(as_user(h[["z"]] <- 1, h = heap), "fmalloc_invalid", "fmalloc_save")
  expect_false(fmalloc_exists("z", heap))
  # The other base idioms of a named collection: classed errors, not R's
  # "names() applied to a non-vector" or "object of type 'environment' is
  # not subsettable".
  expect_fmalloc_error(as_user(names(h) <- "a", h = heap), "fmalloc_invalid", "fmalloc_rename")
  expect_fmalloc_error(as_user(h["x"], h = heap), "fmalloc_invalid", "heap\\[\\[name\\]\\]")
  expect_fmalloc_error(as_user(h["z"] <- list(1), h = heap), "fmalloc_invalid", "fmalloc_save")
  expect_identical(names(heap), c("x", "y"))
})

test_that("a heap is a named collection of its objects: length(), as.list(), lapply()", {
  heap <- local_heap()
  expect_identical(length(heap), 0L)
  expect_identical(as.list(heap), setNames(list(), character()))
  fmalloc_save(c(a = 1, b = 2), "x", heap)
  fmalloc_save(letters, "y", heap)
  # Was 1 (the handle's own binding) and R's unclassed "cannot coerce type
  # 'environment' to vector of type 'list'".
  expect_identical(as_user(length(h), h = heap), 2L)
  all <- as_user(as.list(h), h = heap)
  expect_identical(all, list(x = c(a = 1, b = 2), y = letters))
  expect_true(is_fmalloc(all$x))
  expect_identical(as_user(sapply(h, length), h = heap), c(x = 2L, y = 26L))
  expect_identical(as_user(vapply(h, is.character, NA), h = heap), c(x = FALSE, y = TRUE))
  # By position too, so that seq_along() loops and Map() work.
  expect_identical(as_user(h[[2]], h = heap), letters)
  expect_identical(as_user(Map(function(o, n) length(o), h, names(h)), h = heap), list(x = 2L, y = 26L))
  expect_fmalloc_error(as_user(h[[3]], h = heap), "fmalloc_bounds", "2 objects")
  expect_fmalloc_error(as_user(h[[]], h = heap), "fmalloc_invalid", "name or position")
  # Operators: classed errors, not "comparison (==) is possible only for
  # atomic and list types".
  expect_fmalloc_error(as_user(h == h, h = heap), "fmalloc_invalid", "identical")
  expect_fmalloc_error(as_user(h + 1, h = heap), "fmalloc_invalid", "`\\+`")
  expect_fmalloc_error(as_user(!h, h = heap), "fmalloc_invalid", "`!`")
  # length() is never an error (str() and IDEs call it on any object).
  fmalloc_close(heap)
  expect_identical(length(heap), 0L)
  expect_output(str(heap), "closed")
  expect_identical(length(unserialize(serialize(heap, NULL))), 0L)
})

test_that("fmalloc_ls() prints lengths and bytes as whole numbers, never in e-notation", {
  heap <- local_heap()
  fmalloc_save(double(1e6), "big", heap)
  ls <- fmalloc_ls(heap)
  expect_s3_class(ls, "data.frame")
  expect_type(ls$bytes, "integer")
  expect_type(ls$length, "integer")
  expect_output(print(ls), "8000000", fixed = TRUE)
  expect_output(print(ls[, c("name", "bytes")]), "8000000", fixed = TRUE)
  # Beyond .Machine$integer.max the columns are doubles; they still print
  # in full.
  fake <- ls
  fake$bytes <- 8e9
  fake$length <- 1e9
  out <- capture.output(print(fake))
  expect_true(any(grepl("8000000000", out, fixed = TRUE)))
  expect_true(any(grepl("1000000000", out, fixed = TRUE)))
  expect_false(any(grepl("e+", out, fixed = TRUE)))
})

test_that("argument errors name the argument and show the bad value", {
  heap <- local_heap()
  check <- function(expr, pattern) {
    err <- expect_fmalloc_error(expr, "fmalloc_invalid")
    expect_match(conditionMessage(err), pattern, fixed = TRUE)
  }
  # Checked in R.
  check(fmalloc_open(42), "`path` must be a single non-empty string, not 42")
  check(fmalloc_open(c("a", "b")), "`path` must be a single non-empty string, not a character vector of length 2")
  check(fmalloc_open(NA_character_), "not NA")
  check(fmalloc_open(tempfile(), size_gb = -1), "`size_gb` must be NULL or a single positive number of GiB, not -1")
  check(fmalloc_open(tempfile(), readonly = "yes"), "`readonly` must be TRUE or FALSE, not \"yes\"")
  check(fmalloc_save(1, "", heap), "`name` must be a single non-empty string, not \"\"")
  check(fmalloc_get("x", heap = list()), "`heap` must be a heap handle from fmalloc_open(), not a list of length 0")
  check(fmalloc_save(1, "x", heap = "heap.bin"), "not \"heap.bin\"")
  check(fmalloc_check(3L), "not 3L")
  # Checked in Rust.
  check(create_fmalloc_vector("dbl", 3, heap = heap), "`type` must be one of")
  check(create_fmalloc_vector("dbl", 3, heap = heap), "not \"dbl\"")
  check(create_fmalloc_vector("double", -1, heap = heap), "`length` must be")
  check(create_fmalloc_vector("double", "3", heap = heap), "`length` must be a single whole number >= 0, not \"3\"")
  check(create_fmalloc_vector("double", 3, heap = heap, method = "fast"), "`method` must be \"altrep\" or \"classic\", not \"fast\"")
  check(create_fmalloc_vector("double", 3, heap = heap, init = NA), "`init` must be TRUE or FALSE, not NA")
  check(create_fmalloc_vector("double", 3, heap = 1:2), "not an integer vector of length 2")
})

test_that("a file name R cannot translate is an fmalloc_invalid error, and no file is made", {
  # R's own file functions stop on these with an unclassed error.
  dir <- withr::local_tempdir()
  bytes <- paste0(dir, "/heap\xff.bin")
  Encoding(bytes) <- "bytes"
  bad <- paste0(dir, "/heap\xff.bin") # invalid in a UTF-8 session
  cases <- list(bytes)
  if (l10n_info()[["UTF-8"]]) cases <- c(cases, bad)
  for (p in cases) {
    for (open in list(function(p) fmalloc_open(p, size_gb = 0.01),
                      function(p) init_fmalloc(p, size_gb = 0.01),
                      function(p) fmalloc_check(p))) {
      err <- expect_fmalloc_error(open(p), "fmalloc_invalid")
      expect_match(conditionMessage(err), "must be a file name that R can translate to UTF-8, not ",
                   fixed = TRUE)
      expect_match(conditionMessage(err), "heap<ff>.bin", fixed = TRUE)
    }
  }
  expect_identical(list.files(dir), character(0))
  # A latin1 name is translated, and works.
  latin1 <- paste0(dir, "/heap\xe9.bin")
  Encoding(latin1) <- "latin1"
  heap <- fmalloc_open(latin1, size_gb = 0.01)
  expect_true(file.exists(enc2utf8(latin1)))
  fmalloc_close(heap)
})

test_that("a refused creation leaves no file behind", {
  path <- withr::local_tempfile(fileext = ".bin")
  expect_fmalloc_error(fmalloc_open(path, size_gb = 1e9), "fmalloc_full") # 1 EB
  expect_false(file.exists(path))
  expect_fmalloc_error(init_fmalloc(path, size_gb = 1e9), "fmalloc_full")
  expect_false(file.exists(path))
})

test_that("a heap whose map is refused (ulimit -v) leaves no file behind", {
  skip_on_os("windows")
  skip_on_cran()
  skip_if(Sys.which("bash") == "", "no bash")
  field <- run_script(c(
    "library(Rfmalloc)",
    "path <- commandArgs(TRUE)[1]",
    "e <- tryCatch(fmalloc_open(path, size_gb = 4), error = identity)",
    "cat('class', class(e)[1], '\\n')",
    "cat('exists', file.exists(path), '\\n')",
    "h <- fmalloc_open(path, size_gb = 0.01)",
    "cat('then', fmalloc_info(h)$size, '\\n')"
  ), local_heap_path(), "ulimit -v 2000000")
  expect_identical(field("class"), "fmalloc_io")
  expect_identical(field("exists"), "FALSE")
  # The next open makes the heap of the size asked for.
  expect_lt(as.numeric(field("then")), 2^30 * 0.02)
})

test_that("a dangling symbolic link is refused with a message that says so", {
  skip_on_os("windows")
  dir <- withr::local_tempdir()
  link <- file.path(dir, "heap.bin")
  file.symlink(file.path(dir, "missing-target.bin"), link)
  err <- expect_fmalloc_error(fmalloc_open(link, size_gb = 0.01), "fmalloc_io")
  expect_match(conditionMessage(err), "symbolic link to", fixed = TRUE)
  expect_match(conditionMessage(err), "missing-target.bin', which does not exist", fixed = TRUE)
  expect_false(file.exists(file.path(dir, "missing-target.bin")))
  # Two links that point at each other: not "does not exist".
  file.symlink("loop2", file.path(dir, "loop1"))
  file.symlink("loop1", file.path(dir, "loop2"))
  for (readonly in c(FALSE, TRUE)) {
    err <- expect_fmalloc_error(fmalloc_open(file.path(dir, "loop1"), readonly = readonly), "fmalloc_io")
    expect_match(conditionMessage(err), "symbolic link to 'loop2', which cannot be followed (",
                 fixed = TRUE)
  }
  expect_identical(sort(list.files(dir)), c("heap.bin", "loop1", "loop2"))
})

test_that("no default heap: the message says how to get one", {
  skip_if(!is.null(Rfmalloc:::.fmalloc_state$heap), "a default heap is open")
  err <- expect_fmalloc_error(create_fmalloc_vector("double", 3), "fmalloc_closed")
  expect_match(conditionMessage(err), "no default heap is open; call init_fmalloc(path) first or pass `heap`", fixed = TRUE)
  expect_no_match(conditionMessage(err), "has been closed", fixed = TRUE)
})

test_that("a long copy into the heap shows its progress, in interactive sessions only", {
  skip_on_cran()
  skip_on_os("windows")
  path <- local_heap_path()
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(c(
    "library(Rfmalloc)",
    sprintf("heap <- fmalloc_open(%s, size_gb = 0.5)", deparse(path)),
    # At once instead of after 2 s, in 64 MiB chunks instead of 1 GiB, so
    # that a small copy shows it.
    "options(fmalloc.progress_after = 0, fmalloc.progress_chunk = 2^26)",
    "x <- fmalloc_save(as.double(seq_len(2e7)), 'x', heap, overwrite = TRUE)", # 160 MB
    "cat('saved', identical(x[2e7], 2e7), '\\n')"
  ), script)
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  run <- function(...) {
    suppressWarnings(system2(
      file.path(R.home("bin"), "R"), c(..., "--quiet", "--no-save", "--no-restore"),
      stdin = script, stdout = TRUE, stderr = TRUE, env = paste0("R_LIBS=", shQuote(libs))
    ))
  }
  shown <- run("--interactive")
  expect_true(any(grepl("saved TRUE", shown, fixed = TRUE)), info = paste(shown, collapse = "\n"))
  expect_true(any(grepl("Rfmalloc: copying into the heap: 100% of 0.1 GiB", shown, fixed = TRUE)),
              info = paste(shown, collapse = "\n"))
  quiet <- run()
  expect_true(any(grepl("saved TRUE", quiet, fixed = TRUE)))
  expect_false(any(grepl("copying into the heap", quiet, fixed = TRUE)))
})

test_that("progress options that are not one number fall back to their defaults", {
  heap <- local_heap()
  for (bad in list(NA, "a", c(1, 2), NULL)) {
    withr::local_options(fmalloc.progress_after = bad, fmalloc.progress_chunk = bad)
    local(fmalloc_save(1:3, "x", heap, overwrite = TRUE))
    expect_identical(fmalloc_get("x", heap)[], 1:3)
  }
})
