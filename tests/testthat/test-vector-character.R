# Character vectors: a string pool in the heap (ALTREP), or R's own string
# pointers in a heap block (classic, session-only).

latin1 <- function(s) iconv(s, "UTF-8", "latin1")

test_that("element reads and writes keep NA and encodings", {
  local_default_heap()
  for (method in methods) {
    x <- create_fmalloc_vector("character", 6, method = method)
    expect_identical(x[], rep(NA_character_, 6))
    x[2] <- "\u00e9"
    x[3] <- latin1("caf\u00e9")
    bytes <- rawToChar(as.raw(c(0x61, 0xff)))
    Encoding(bytes) <- "bytes"
    x[4] <- bytes
    x[5] <- "plain ascii"
    x[6] <- ""
    x[1] <- NA
    expect_identical(x[2], "\u00e9")
    expect_identical(Encoding(x[2]), "UTF-8")
    expect_identical(Encoding(x[3]), "latin1")
    expect_identical(x[3], latin1("caf\u00e9"))
    expect_identical(enc2utf8(x[3]), "caf\u00e9")
    expect_identical(Encoding(x[4]), "bytes")
    expect_identical(charToRaw(x[4]), as.raw(c(0x61, 0xff)))
    expect_identical(x[5:6], c("plain ascii", ""))
    expect_true(is.na(x[1]))
    ref <- c(NA, "\u00e9", latin1("caf\u00e9"), bytes, "plain ascii", "")
    expect_identical(x[], ref)
    expect_identical(x, ref)
    expect_identical(nchar(x, type = "bytes"), nchar(ref, type = "bytes"))
    expect_true(is_fmalloc(x), info = method)
    expect_identical(Rfmalloc:::.fmalloc_inspect(x)$private, method == "classic")
  }
})

test_that("the string pool is in the file (ALTREP)", {
  path <- local_default_heap()
  x <- create_fmalloc_vector("character", 3)
  x[2] <- "h\u00e9llo pool"
  info <- Rfmalloc:::.fmalloc_inspect(x)
  pool <- file_bytes(path, info$offset, info$length)
  expect_identical(pool[1:8], charToRaw("FMSTRPL1"))
  needle <- charToRaw("h\u00e9llo pool")
  at <- which(pool == needle[1])
  found <- any(vapply(at, function(i) identical(pool[i:(i + length(needle) - 1)], needle), TRUE))
  expect_true(found)
})

test_that("many writes grow and compact the pool and keep every value", {
  local_default_heap()
  set.seed(42)
  n <- 50
  x <- create_fmalloc_vector("character", n)
  ref <- rep(NA_character_, n)
  for (k in 1:3000) {
    i <- sample.int(n, 1)
    v <- if (runif(1) < 0.1) NA_character_ else
      paste(rep(sample(c(letters, "\u00e9", "\u00fc"), 1), sample.int(200, 1)), collapse = "")
    x[i] <- v
    ref[i] <- v
  }
  expect_identical(x[], ref)
  expect_true(is_fmalloc(x))
  # Rewriting the same elements does not grow the pool without bound.
  before <- Rfmalloc:::.fmalloc_inspect(x)$length
  for (k in 1:2000) x[(k %% n) + 1] <- strrep("z", 150)
  expect_lt(Rfmalloc:::.fmalloc_inspect(x)$length, 4 * before + 65536)
  expect_identical(x[], rep(strrep("z", 150), n))
})

test_that("character vectors work with base functions and copies", {
  local_default_heap()
  x <- create_fmalloc_vector("character", 4)
  x[] <- c("b", "a", NA, "\u00e9")
  ref <- c("b", "a", NA, "\u00e9")
  expect_identical(sort(x), sort(ref))
  expect_identical(paste0(x, "!"), paste0(ref, "!"))
  expect_identical(toupper(x), toupper(ref))
  expect_identical(match("a", x), 2L)
  expect_identical(unserialize(serialize(x, NULL)), ref)
  y <- duplicate_of(x)
  expect_false(is_fmalloc(y))
  expect_identical(y, ref)
  z <- x
  z[1] <- "changed"
  expect_identical(x[1], "b")
  expect_identical(factor(x), factor(ref))
})

test_that("classic character vectors are in the heap but session-only", {
  skip_if_no_classic()
  local_default_heap()
  x <- create_fmalloc_vector("character", 3, method = "classic")
  x[2] <- "\u00e9"
  info <- Rfmalloc:::.fmalloc_inspect(x)
  expect_identical(info$method, "classic")
  expect_true(info$private)   # the elements are pointers into R's heap
  expect_identical(x[], c(NA, "\u00e9", NA))
  gc()
  expect_identical(x[2], "\u00e9")
})

test_that("writes after R expanded the strings still reach the pool", {
  path <- local_default_heap()
  x <- create_fmalloc_vector("character", 3)
  x[] <- c("c", "a", "b")
  # radix sorting asks for the data pointer, which expands the strings into
  # an ordinary STRSXP (.Internal keeps x unshared, unlike order()).
  o <- .Internal(radixsort(TRUE, FALSE, FALSE, TRUE, x))
  expect_identical(o, c(2L, 3L, 1L))
  x[2] <- "written-after-expansion"
  expect_true(is_fmalloc(x))
  expect_identical(x[], c("c", "written-after-expansion", "b"))
  info <- Rfmalloc:::.fmalloc_inspect(x)
  expect_false(info$private)
  pool <- file_bytes(path, info$offset, info$length)
  expect_match(rawToChar(pool[pool != as.raw(0)]), "written-after-expansion", fixed = TRUE)
})

test_that("a damaged string pool gives fmalloc_corrupt naming the element (1-based)", {
  path <- withr::local_tempfile(fileext = ".bin")
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("a", "b", "c"), "s", heap)
  info <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("s", heap))
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
  rm(heap)
  invisible(gc())
  # Element 2's entry (pool header 64 bytes, 16 per entry): unknown flag bits.
  bytes <- readBin(path, "raw", file.size(path))
  at <- info$offset + 64 + 16 + 12 + 1
  bytes[at] <- as.raw(0xf0)
  writeBin(bytes, path)
  heap <- fmalloc_open(path, readonly = TRUE)
  s <- fmalloc_get("s", heap)
  expect_identical(s[1], "a")
  e <- expect_error(s[2], class = "fmalloc_corrupt")
  expect_s3_class(e, "fmalloc_error")
  expect_match(conditionMessage(e), "element 2 of a character vector", fixed = TRUE)
  expect_identical(s[3], "c")
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
})
