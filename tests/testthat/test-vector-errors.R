# Errors raised while R itself calls into Rfmalloc (ALTREP methods: Elt,
# Set_elt, Dataptr, Duplicate, Serialized_state) take the one error channel
# like every other: a condition of class c("fmalloc_<kind>", "fmalloc_error",
# "error", "condition"), never a plain simpleError (issue 9, item 10).

test_that("a full heap while a character vector grows its pool is fmalloc_full", {
  skip_on_cran()
  skip_on_os("windows")
  skip_if(Sys.which("bash") == "", "no bash")
  path <- local_heap_path()
  field <- run_under_file_limit(c(
    "library(Rfmalloc)",
    "path <- commandArgs(TRUE)[1]",
    "init_fmalloc(path)",
    "v <- create_fmalloc_vector('character', 1000)",
    "v[1] <- 'first'",
    "long <- strrep('x', 1e5)",
    # Set_elt appends each string to the pool, which grows the heap file
    # until the file size limit stops it.
    "e <- tryCatch({ for (i in 2:1000) v[i] <- long; NULL }, error = identity)",
    "cat('class', class(e), '\\n')",
    "cat('message', conditionMessage(e), '\\n')",
    "cat('first', v[1], '\\n')",
    "cat('after', tryCatch({ v[2] <- 'short'; v[2] }, error = function(e) class(e)[1]), '\\n')"
  ), path)
  expect_identical(field("class"), "fmalloc_full fmalloc_error error condition")
  expect_match(field("message"), "^Rfmalloc: ")
  # The strings written before are intact and the vector still works.
  expect_identical(field("first"), "first")
  expect_identical(field("after"), "short")
})

test_that("a forked child that needs pool growth gets exactly fmalloc_forked", {
  skip_on_os("windows")
  heap <- local_heap()
  x <- create_fmalloc_vector("character", 4, heap = heap)
  x[] <- "ab"
  job <- parallel::mcparallel({
    e <- tryCatch({ x[2] <- strrep("z", 500); NULL }, error = identity)
    list(class = class(e), message = conditionMessage(e))
  })
  res <- parallel::mccollect(job)[[1]]
  expect_identical(res$class, c("fmalloc_forked", "fmalloc_error", "error", "condition"))
  expect_match(res$message, "forked child", fixed = TRUE)
  expect_identical(x, rep("ab", 4))
})

test_that("a damaged string pool is fmalloc_corrupt from Elt, Duplicate and Dataptr", {
  path <- withr::local_tempfile(fileext = ".bin")
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("a", "b", "c"), "s", heap)
  info <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("s", heap))
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  # Element 3's entry (pool header 64 bytes, 16 per entry): unknown flag bits.
  bytes <- readBin(path, "raw", file.size(path))
  bytes[info$offset + 64 + 2 * 16 + 12 + 1] <- as.raw(0xf0)
  writeBin(bytes, path)
  heap <- fmalloc_open(path, readonly = TRUE)
  withr::defer(fmalloc_close(heap))
  s <- fmalloc_get("s", heap)
  # Elt, with the element numbered from 1.
  e <- expect_fmalloc_error(s[3], "fmalloc_corrupt")
  expect_match(conditionMessage(e), "element 3 of a character vector", fixed = TRUE)
  # Duplicate (a shared vector modified), then Dataptr (R asks for every
  # string at once).
  t <- s
  expect_fmalloc_error(t[1] <- "z", "fmalloc_corrupt", "element 3")
  expect_fmalloc_error(sort(s), "fmalloc_corrupt", "element 3")
  expect_identical(s[1:2], c("a", "b"))
})
