# fmalloc_check(): a read-only verification that reports problems as rows,
# never writes to the file, and never raises for a file it cannot open
# (except one locked by a writer).

check_columns <- c("object", "part", "problem")

# Offset (0-based) of the string pool of `n` elements in the file at `path`:
# its magic followed by the element count. Exactly one such pool expected.
pool_offset <- function(path, n) {
  bytes <- readBin(path, "raw", file.size(path))
  magic <- c(charToRaw("FMSTRPL1"), as.raw((n %/% 256^(0:7)) %% 256))
  starts <- which(bytes == magic[[1L]])
  hits <- Filter(function(i) identical(bytes[i:(i + 15L)], magic), starts)
  stopifnot(length(hits) == 1L)
  hits[[1L]] - 1
}

# Sets the flags of element `i` (1-based) of the pool at `pool` to `flags`.
set_pool_flags <- function(path, pool, i, flags) {
  con <- file(path, "r+b")
  on.exit(close(con))
  seek(con, pool + 64 + 16 * (i - 1) + 12, rw = "write")
  writeBin(as.integer(flags), con, size = 4L, endian = "little")
}

test_that("a clean heap has no problems: zero rows with the documented columns", {
  heap <- local_heap()
  fmalloc_save(c("a", NA, "\u00e9"), "strs", heap)
  fmalloc_save(list(x = 1:10, y = c(1.5, NA)), "lst", heap)
  fmalloc_save(data.frame(a = 1:3, b = c("x", "y", "z")), "df", heap)
  before <- readBin(fmalloc_info(heap)$path, "raw", file.size(fmalloc_info(heap)$path))
  res <- fmalloc_check(heap)
  expect_s3_class(res, "data.frame")
  expect_identical(names(res), check_columns)
  expect_identical(nrow(res), 0L)
  expect_true(all(vapply(res, is.character, logical(1))))
  # A check commits nothing and writes nothing.
  expect_identical(readBin(fmalloc_info(heap)$path, "raw", file.size(fmalloc_info(heap)$path)), before)
})

test_that("a damaged string pool element is a row naming the object", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(1:5, "ints", heap)
  fmalloc_save(c("one", "two", "three", "four", "five", "six", "seven"), "words", heap)
  fmalloc_close(heap)
  invisible(gc()) # drops the vectors fmalloc_save() returned, and the lock
  set_pool_flags(path, pool_offset(path, 7), 2, 0x80)
  before <- readBin(path, "raw", file.size(path))

  res <- fmalloc_check(path)
  expect_identical(names(res), check_columns)
  expect_identical(nrow(res), 1L)
  expect_identical(res$object, "words")
  expect_identical(res$part, "string pool")
  expect_match(res$problem, "element 2", fixed = TRUE)
  expect_match(res$problem, "flags", fixed = TRUE)
  expect_identical(readBin(path, "raw", file.size(path)), before)

  # A read-only handle works and finds the same; the other object is fine.
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_check(heap), res)
  expect_identical(fmalloc_get("ints", heap)[], 1:5)
  expect_identical(readBin(path, "raw", file.size(path)), before)
})

test_that("a path that is not a heap gives one 'open' row and is left unchanged", {
  not_a_heap <- withr::local_tempfile(fileext = ".txt")
  writeLines(c("hello", "world"), not_a_heap)
  before <- readBin(not_a_heap, "raw", file.size(not_a_heap))
  mtime <- file.mtime(not_a_heap)
  res <- fmalloc_check(not_a_heap)
  expect_identical(names(res), check_columns)
  expect_identical(nrow(res), 1L)
  expect_identical(res$object, NA_character_)
  expect_identical(res$part, "open")
  expect_match(res$problem, "not a valid Rfmalloc heap", fixed = TRUE)
  expect_identical(readBin(not_a_heap, "raw", file.size(not_a_heap)), before)
  expect_identical(file.mtime(not_a_heap), mtime)

  missing <- file.path(tempdir(), "no-such-heap.bin")
  res <- fmalloc_check(missing)
  expect_identical(res$part, "open")
  expect_false(file.exists(missing))
})

test_that("a read-only handle and a clean path check give zero rows", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c(x = 1.5, y = 2.5), "named_dbl", heap)
  fmalloc_close(heap)
  invisible(gc())
  expect_identical(nrow(fmalloc_check(path)), 0L)
  ro <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(ro))
  res <- fmalloc_check(ro)
  expect_identical(names(res), check_columns)
  expect_identical(nrow(res), 0L)
})

test_that("a heap opened at an older commit is reported as 'recovery'", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(1:3, "first", heap)
  fmalloc_save(4:6, "second", heap)
  fmalloc_close(heap)
  invisible(gc())
  # Tear the newest slot (generation 3 is in slot A: slots alternate, the
  # creation wrote generation 1 in slot A). Byte 64 is its generation.
  con <- file(path, "r+b")
  seek(con, 64 + 8, rw = "write")
  writeBin(as.raw(0xff), con)
  close(con)
  expect_warning(heap <- fmalloc_open(path, readonly = TRUE), class = "fmalloc_recovered")
  on.exit(fmalloc_close(heap))
  res <- fmalloc_check(heap)
  expect_true("recovery" %in% res$part)
  expect_true(all(is.na(res$object[res$part %in% c("recovery", "slot A")])))
  expect_identical(res, fmalloc_check(path))
})

test_that("a heap a writer has open: the writer's handle checks, a path is locked", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  on.exit(fmalloc_close(heap))
  fmalloc_save(letters, "abc", heap)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  expect_fmalloc_error(fmalloc_check(path), "fmalloc_locked")
})

test_that("arguments are validated", {
  expect_fmalloc_error(fmalloc_check(1), "fmalloc_invalid", "heap handle")
  expect_fmalloc_error(fmalloc_check(c("a", "b")), "fmalloc_invalid")
  expect_fmalloc_error(fmalloc_check(NA_character_), "fmalloc_invalid")
  heap <- local_heap()
  fmalloc_close(heap)
  expect_fmalloc_error(fmalloc_check(heap), "fmalloc_closed")
})

test_that("fmalloc_check() finds strings of a pool that share bytes", {
  path <- withr::local_tempfile(fileext = ".bin")
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c("abc", "def", "ghi"), "s", heap)
  info <- Rfmalloc:::.fmalloc_inspect(fmalloc_get("s", heap))
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  # Element 3's record (pool header 64 bytes, 16 per record) points at
  # element 1's bytes: a write to one would change the other.
  bytes <- readBin(path, "raw", file.size(path))
  rec <- function(i) info$offset + 64 + 16 * (i - 1)
  bytes[rec(3) + 1:8] <- bytes[rec(1) + 1:8]
  writeBin(bytes, path)
  problems <- fmalloc_check(path)
  expect_identical(problems$object, "s")
  expect_identical(problems$part, "string pool")
  expect_match(problems$problem, "elements 1 and 3: their strings share bytes", fixed = TRUE)
})

# The names in the leaf page at `off` (catalog v2, inst/FORMAT.md "Leaf
# record") of the file at `path`.
leaf_names <- function(path, off) {
  page <- readBin(path, "raw", off + 4096)[off + 1:4096]
  u16 <- function(at) as.integer(page[at + 1L]) + 256L * as.integer(page[at + 2L])
  u32 <- function(at) u16(at) + 65536 * u16(at + 2L)
  stopifnot(identical(page[1:8], c(charToRaw("RFMCATP"), as.raw(0))), page[9] == as.raw(1))
  at <- 32L
  out <- character(u16(10L))
  for (i in seq_along(out)) {
    n <- u16(at)
    s <- u16(at + 2L)
    k <- u32(at + 4L)
    inline <- all(page[at + 64L + 1:8] == as.raw(0))
    out[[i]] <- rawToChar(page[at + 88L + seq_len(n)])
    at <- at + 88L + n + (if (s == 65535L) 0L else s) + (if (inline) 40L * k else 0L)
  }
  out
}

test_that("a damaged catalog leaf: a read-only listing gives the other leaves and warns", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  all <- sprintf("obj%04d", 1:300)
  for (i in 1:300) fmalloc_save(i, all[[i]], heap)
  fmalloc_close(heap)
  invisible(gc())
  # The slot in force (highest generation), its root page (a branch), the
  # child of its second record (the first is 32 bytes): a leaf. One bit of
  # the leaf's records flipped.
  con <- file(path, "r+b")
  u64 <- function(o) { seek(con, o); sum(readBin(con, "integer", 2, size = 4) * c(1, 2^32)) }
  slot <- if (u64(64) > u64(128)) 64 else 128
  root <- u64(slot + 8)
  seek(con, root + 8); expect_identical(readBin(con, "raw", 1), as.raw(2))
  leaf <- u64(root + 64 + 8)
  hidden <- leaf_names(path, leaf)
  expect_true(length(hidden) > 0L && length(hidden) < 300L)
  seek(con, leaf + 100); b <- readBin(con, "raw", 1)
  seek(con, leaf + 100, rw = "write"); writeBin(xor(b, as.raw(1)), con)
  close(con)

  expect_error(fmalloc_open(path), class = "fmalloc_corrupt")
  h <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(h))
  expect_warning(ls <- fmalloc_ls(h), class = "fmalloc_damaged")
  expect_identical(ls$name, setdiff(all, hidden))
  expect_true(all(ls$status == "ok"))
  expect_null(attr(ls, "damaged"))
  w <- tryCatch(fmalloc_ls(h), warning = identity)
  expect_s3_class(w, "fmalloc_warning")
  expect_match(conditionMessage(w), format(leaf, scientific = FALSE), fixed = TRUE)
  expect_match(conditionMessage(w), sprintf("%d of the 300 objects", length(hidden)), fixed = TRUE)
  expect_warning(expect_identical(names(h), setdiff(all, hidden)), class = "fmalloc_damaged")
  expect_warning(out <- capture.output(print(h)), class = "fmalloc_damaged")
  expect_true(any(grepl("objects: 300", out, fixed = TRUE)))
  expect_identical(fmalloc_info(h)$objects, 300)
  kept <- setdiff(all, hidden)
  expect_true(fmalloc_exists(kept[[1]], h))
  expect_identical(fmalloc_get(kept[[length(kept)]], h), match(kept[[length(kept)]], all))
  expect_error(fmalloc_get(hidden[[1]], h), class = "fmalloc_corrupt")
  res <- fmalloc_check(h)
  expect_true(any(grepl(format(leaf, scientific = FALSE), res$problem, fixed = TRUE)))
})

test_that("a factor level stored twice is a row naming the object", {
  heap <- local_heap()
  # Levels in the meta: put there by the test hook (a save refuses them).
  fmalloc_save(factor(c("lvA", "lvB")), "f", heap)
  fmalloc_save(factor(c("lvA", "lvB")), "scratch", heap)
  meta <- Rfmalloc:::fmalloc_named_raw_meta(heap, "scratch")
  at <- grepRaw("lvB", meta, fixed = TRUE)
  meta[at + 2L] <- charToRaw("A")
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "f", meta)
  res <- fmalloc_check(heap)
  expect_identical(res$object, "f")
  expect_identical(res$part, "meta")
  expect_identical(res$problem, "factor level 2 (\"lvA\") repeats level 1")
  fmalloc_rm("f", heap)
  # Many levels, a string block of their own: changed in the file.
  lv <- sprintf("lv%05d", 1:5000)
  local(fmalloc_save(factor(lv[1:3], levels = lv), "big", heap))
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  path <- fmalloc_info(heap)$path
  invisible(gc())
  fmalloc_close(heap)
  bytes <- readBin(path, "raw", file.size(path))
  at <- grepRaw("lv04321", bytes, fixed = TRUE)
  expect_length(at, 1L)
  con <- file(path, "r+b")
  seek(con, at - 1L, rw = "write")
  writeBin(charToRaw("lv00017"), con)
  close(con)
  res <- fmalloc_check(path)
  expect_identical(res$object, "big")
  expect_match(res$part, "^block ")
  expect_identical(res$problem, "factor level 4321 (\"lv00017\") repeats level 17")
})

test_that("a factor code that is not a level is a row naming the object and block", {
  heap <- local_heap()
  fmalloc_save(factor(c("a", "b", "a")), "f", heap)
  fmalloc_save(data.frame(g = factor(c("x", "y"))), "df", heap)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  # The documented way to a malformed factor: a level added in a batch that
  # rolls back, with a code for it written meanwhile (data writes are not
  # part of a batch).
  expect_error(fmalloc_batch(heap, {
    fmalloc_set_attr(heap, "f", "levels", c("a", "b", "c"))
    fmalloc_write(heap, "f", 2:3, c("c", "c"))
    stop("give up")
  }), "give up")
  expect_identical(levels(fmalloc_get("f", heap)), c("a", "b"))
  res <- fmalloc_check(heap)
  expect_identical(res$object, "f")
  expect_identical(res$part, "block 1")
  expect_match(res$problem, "2 factor code(s) are not a level (1 to 2), the first 3 at element 2",
               fixed = TRUE)
  # Many levels (stored as a string block of their own): counted as
  # strings, not bytes.
  lv <- sprintf("level%04d", 1:5000)
  fmalloc_save(factor(lv[1:3], levels = lv), "big", heap)
  expect_error(fmalloc_batch(heap, {
    fmalloc_set_attr(heap, "big", "levels", c(lv, "extra"))
    fmalloc_write(heap, "big", 1, "extra")
    stop("give up")
  }), "give up")
  res <- fmalloc_check(heap)
  expect_identical(res$object, c("big", "f"))
  expect_match(res$problem[[1]], "1 factor code(s) are not a level (1 to 5000), the first 5001 at element 1",
               fixed = TRUE)
  res <- res[res$object == "f", ]
  rownames(res) <- NULL
  # The same from the path (a read-only open for the check).
  path <- fmalloc_info(heap)$path
  gc() # the vector fmalloc_get() made keeps the file open until collected
  fmalloc_close(heap)
  chk <- fmalloc_check(path)
  chk <- chk[chk$object == "f", ]
  rownames(chk) <- NULL
  expect_identical(chk, res)
})

test_that("a file truncated while open is a row, not a crash", {
  skip_on_os("windows")
  skip_on_cran()
  skip_if(Sys.which("truncate") == "", "no truncate")
  field <- run_script(c(
    "library(Rfmalloc)",
    "path <- commandArgs(TRUE)[1]",
    "h <- fmalloc_open(path, size_gb = 0.1)",
    "fmalloc_save(as.numeric(1:2e6), 'v', h)",
    "system(paste('truncate -s 50M', shQuote(path)))",
    "res <- fmalloc_check(h)",
    "cat('rows', nrow(res), '\\n')",
    "cat('part', res$part, '\\n')",
    "cat('problem', res$problem, '\\n')",
    # Not closed: closing writes through the map, past the file's end.
    "tools::pskill(Sys.getpid(), tools::SIGKILL)"
  ), local_heap_path(), exits = FALSE)
  expect_identical(field("rows"), "1")
  expect_identical(field("part"), "file")
  expect_match(field("problem"), "the file is 52428800 bytes, shorter than the", fixed = TRUE)
  expect_match(field("problem"), "truncated while open", fixed = TRUE)
})
