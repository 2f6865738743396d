# A save refuses, before writing anything, an object that a read would
# refuse (format::readable owns the rules): it was committed first, and the
# object it replaced was lost while the error said "nothing was changed".

expect_refused_save <- function(heap, x, name, class = "fmalloc_invalid") {
  before <- fmalloc_ls(heap)
  expect_error(fmalloc_save(x, name, heap, overwrite = TRUE), class = class)
  expect_identical(fmalloc_ls(heap), before)
}

test_that("objects R's methods fail on are refused and the old object stays", {
  heap <- local_heap()
  good <- factor(c("a", "b"))
  local(fmalloc_save(good, "f", heap))
  bad <- list(
    no_levels = structure(1:2, class = "factor"),
    numeric_levels = structure(1:3, levels = 1:3, class = "factor"),
    short_row_names = structure(list(a = 1:3), row.names = 1:2, class = "data.frame"),
    numeric_tzone = structure(1, class = c("POSIXct", "POSIXt"), tzone = 1)
  )
  for (b in names(bad)) {
    expect_refused_save(heap, bad[[b]], "f")
    expect_refused_save(heap, bad[[b]], paste0("new_", b))
    expect_false(fmalloc_exists(paste0("new_", b), heap))
  }
  # Codes that are not a level (R: "malformed factor" when printed).
  expect_refused_save(heap, structure(c(1L, 5L), levels = c("a", "b"), class = "factor"), "f")
  expect_refused_save(heap, structure(c(-1L, 1L), levels = c("a", "b"), class = "factor"), "f")
  expect_refused_save(heap, data.frame(g = structure(c(1L, 3L), levels = c("a", "b"), class = "factor")), "f")
  expect_error(fmalloc_save(structure(c(1L, 5L), levels = c("a", "b"), class = "factor"), "f", heap,
                            overwrite = TRUE),
               "cannot save 'f': 1 factor code(s) are not a level (1 to 2), the first 5 at element 2", fixed = TRUE)
  fmalloc_save(factor(c("a", NA, "b")), "with_na", heap) # NA codes are fine
  expect_identical(fmalloc_get("with_na", heap, copy = TRUE), factor(c("a", NA, "b")))
  expect_error(fmalloc_save(bad$no_levels, "f", heap, overwrite = TRUE),
               "cannot save 'f': a factor without character levels")
  expect_identical(fmalloc_get("f", heap, copy = TRUE), good)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("a factor with a level twice is refused, as factor() and levels<- refuse it", {
  heap <- local_heap()
  good <- factor(c("a", "b"))
  local(fmalloc_save(good, "f", heap))
  twice <- structure(1:3, levels = c("a", "b", "a"), class = "factor")
  expect_refused_save(heap, twice, "f")
  expect_error(fmalloc_save(twice, "f", heap, overwrite = TRUE),
               "cannot save 'f': factor level 3 (\"a\") repeats level 1", fixed = TRUE)
  # The same string in two encodings is the same level (R: unique() is one).
  latin <- iconv("caf\u00e9", "UTF-8", "latin1")
  expect_identical(Encoding(latin), "latin1")
  expect_refused_save(heap, structure(1:2, levels = c("caf\u00e9", latin), class = "factor"), "f")
  expect_refused_save(heap, structure(1:2, levels = c(NA, NA), class = "factor"), "f")
  # A "bytes" string is another level than the same bytes in UTF-8 (in R too).
  marked <- "caf\u00e9"
  Encoding(marked) <- "bytes"
  two <- factor(c("x", "y"))
  levels(two) <- c("caf\u00e9", marked)
  local(fmalloc_save(two, "bytes_level", heap))
  expect_identical(fmalloc_get("bytes_level", heap, copy = TRUE), two)
  fmalloc_rm("bytes_level", heap)
  expect_refused_save(heap, data.frame(g = twice), "f")
  # Many levels: a string block of their own.
  lv <- sprintf("level%04d", 1:5000)
  expect_refused_save(heap, structure(1:2, levels = c(lv, "level0007"), class = "factor"), "f")
  expect_error(fmalloc_set_attr(heap, "f", "levels", c("a", "b", "b")),
               "factor level 3 (\"b\") repeats level 2", fixed = TRUE, class = "fmalloc_invalid")
  expect_identical(fmalloc_get("f", heap, copy = TRUE), good)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("a class of a package that is not loaded is refused before writing", {
  heap <- local_heap()
  x <- structure(1:3, class = structure("foo", package = "notapackage"))
  expect_refused_save(heap, x, "s4", class = "fmalloc_unsupported")
  expect_false(fmalloc_exists("s4", heap))
})

test_that("fmalloc_set_attr() refuses a value that would make the object unreadable", {
  heap <- local_heap()
  local({
    fmalloc_save(1:5, "i", heap)
    fmalloc_save(data.frame(a = 1:3, b = c("x", "y", "z")), "df", heap)
  })
  expect_error(fmalloc_set_attr(heap, "i", "class", "factor"), class = "fmalloc_invalid")
  expect_error(fmalloc_set_attr(heap, "df", "row.names", 1:2), class = "fmalloc_invalid")
  expect_identical(fmalloc_get("i", heap, copy = TRUE), 1:5)
  expect_identical(fmalloc_get("df", heap, copy = TRUE),
                   data.frame(a = 1:3, b = c("x", "y", "z")))
  # Later changes of the objects still work.
  fmalloc_set_attr(heap, "i", "names", letters[1:5])
  expect_identical(names(fmalloc_get("i", heap)), letters[1:5])
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("ordinary objects with classed list columns save and read back", {
  heap <- local_heap()
  d <- data.frame(id = 1:2, when = c("2024-01-02 03:04", "2024-05-06 07:08"))
  d$time <- strptime(d$when, "%Y-%m-%d %H:%M", tz = "UTC") # POSIXlt: a list of fields
  fmalloc_save(d, "d", heap)
  expect_identical(fmalloc_get("d", heap, copy = TRUE), d)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
})

test_that("a data frame that is not a list is refused", {
  heap <- local_heap()
  local(fmalloc_save(c(1, 2), "x", heap))
  expect_refused_save(heap, structure(c(1, 2), class = "data.frame"), "y")
  expect_error(fmalloc_set_attr(heap, "x", "class", "data.frame"), class = "fmalloc_invalid")
  expect_identical(fmalloc_get("x", heap, copy = TRUE), c(1, 2))
})

test_that("an S4 class of a package not loaded is refused without loading it", {
  heap <- local_heap()
  x <- asS4(structure(1:3, class = structure("Foo", package = "notapackage")))
  err <- expect_error(fmalloc_save(x, "x", heap), class = "fmalloc_unsupported")
  expect_match(conditionMessage(err), "package 'notapackage', which is not loaded", fixed = TRUE)
  expect_false(isNamespaceLoaded("notapackage"))
  expect_false(fmalloc_exists("x", heap))
  # Nested in a list, as well.
  expect_error(fmalloc_save(list(a = 1, b = x), "l", heap), class = "fmalloc_unsupported")
})
