test_that("fmalloc_open creates and initialises a new heap file", {
  path <- local_heap_path()
  expect_false(file.exists(path))

  heap <- fmalloc_open(path, size_gb = 0.01)
  on.exit(fmalloc_close(heap))

  expect_s3_class(heap, "fmalloc_heap")
  expect_true(attr(heap, "created"))
  expect_true(file.exists(path))
  info <- fmalloc_info(heap)
  expect_equal(info$size, file.size(path))
  expect_gte(info$size, 0.01 * 1024^3)
  expect_equal(info$objects, 0)
  expect_gt(info$free, 0)
  expect_lte(info$used + info$free, info$size)
  expect_true(any(readBin(path, "raw", 64) != as.raw(0)))
})

test_that("an empty file is initialised", {
  path <- local_heap_path()
  file.create(path)
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  expect_true(attr(heap, "created"))
  expect_gt(file.size(path), 0)
})

test_that("reopening finds the same heap, not a new one", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  before <- fmalloc_info(heap)
  fmalloc_close(heap)

  heap <- fmalloc_open(path, size_gb = 0.5)
  on.exit(fmalloc_close(heap))
  after <- fmalloc_info(heap)
  expect_false(attr(heap, "created"))
  expect_identical(after$heap_id, before$heap_id)
  expect_identical(after$size, before$size) # size_gb is ignored on reopen
  expect_identical(after$objects, before$objects)
})

test_that("heap ids differ between heaps", {
  a <- local_heap()
  b <- local_heap()
  expect_match(fmalloc_info(a)$heap_id, "^[0-9a-f]{32}$")
  expect_false(fmalloc_info(a)$heap_id == fmalloc_info(b)$heap_id)
})

test_that("print shows path, mode, size, used, free and objects", {
  heap <- local_heap()
  info <- fmalloc_info(heap)
  out <- capture.output(res <- withVisible(print(heap)))
  expect_identical(res$value, heap)
  expect_false(res$visible)
  expect_identical(out, format(heap))
  expect_match(out[[1]], info$path, fixed = TRUE)
  expect_match(out, "mode: +read-write", all = FALSE)
  expect_match(out, "size: +[0-9.]+ MiB", all = FALSE)
  expect_match(out, "used: +[0-9.]+ (B|KiB|MiB)", all = FALSE)
  expect_match(out, "free: +[0-9.]+ (B|KiB|MiB)", all = FALSE)
  expect_match(out, "objects: +0$", all = FALSE)
})

test_that("fmalloc_info returns one row with the documented columns", {
  heap <- local_heap()
  info <- fmalloc_info(heap)
  expect_s3_class(info, "data.frame")
  expect_identical(nrow(info), 1L)
  expect_identical(
    names(info),
    c("path", "heap_id", "readonly", "sync", "size", "disk", "used", "free", "objects")
  )
  expect_type(info$path, "character")
  expect_type(info$heap_id, "character")
  expect_type(info$readonly, "logical")
  for (col in c("size", "used", "free", "objects")) expect_type(info[[col]], "double")
  expect_false(info$readonly)
  expect_identical(info$path, normalizePath(info$path))
})

test_that("relative paths are made absolute", {
  dir <- withr::local_tempdir()
  withr::local_dir(dir)
  heap <- fmalloc_open("rel.bin", size_gb = 0.01)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_info(heap)$path, file.path(normalizePath(dir), "rel.bin"))
})

test_that("close is idempotent and a closed handle gives fmalloc_closed", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  expect_invisible(fmalloc_close(heap))
  expect_null(fmalloc_close(heap))
  err <- expect_fmalloc_error(fmalloc_info(heap), "fmalloc_closed", "closed")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_info))
  expect_fmalloc_error(fmalloc_sync(heap), "fmalloc_closed")
  expect_output(print(heap), "(closed)", fixed = TRUE)

  # Closed for every copy of the handle.
  heap <- fmalloc_open(path)
  copy <- heap
  fmalloc_close(heap)
  expect_fmalloc_error(fmalloc_info(copy), "fmalloc_closed")
})

test_that("closing releases the file for a new writer", {
  path <- local_heap_path()
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  heap <- fmalloc_open(path, readonly = TRUE)
  fmalloc_close(heap)
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  expect_false(fmalloc_info(heap)$readonly)
})

test_that("a file that is not a heap is refused and left unchanged", {
  path <- local_heap_path()
  writeLines(c("id,value", "1,2"), path)
  before <- tools::md5sum(path)
  err <- expect_fmalloc_error(fmalloc_open(path), "fmalloc_corrupt")
  expect_match(conditionMessage(err), "^Rfmalloc: ")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_open))
  expect_identical(tools::md5sum(path), before)

  # Also read-only, and random bytes of a plausible size.
  expect_fmalloc_error(fmalloc_open(path, readonly = TRUE), "fmalloc_corrupt")
  set.seed(1)
  writeBin(as.raw(sample(0:255, 65536, replace = TRUE)), path)
  before <- tools::md5sum(path)
  expect_fmalloc_error(fmalloc_open(path), "fmalloc_corrupt")
  expect_identical(tools::md5sum(path), before)
})

test_that("a truncated heap file is refused and left unchanged", {
  path <- local_heap_path()
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  bytes <- readBin(path, "raw", 4096)
  writeBin(bytes[1:100], path)
  before <- tools::md5sum(path)
  expect_fmalloc_error(fmalloc_open(path), "fmalloc_corrupt")
  expect_identical(tools::md5sum(path), before)
})

test_that("a second writer in another process gets fmalloc_locked naming the file", {
  skip_on_cran()
  path <- local_heap_path()
  fmalloc_close(fmalloc_open(path, size_gb = 0.01))
  local_holder(path, readonly = FALSE)

  err <- expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
  # A writer excludes readers too.
  expect_fmalloc_error(fmalloc_open(path, readonly = TRUE), "fmalloc_locked")
})

test_that("read-only opens share, and exclude a writer", {
  skip_on_cran()
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  id <- fmalloc_info(heap)$heap_id
  fmalloc_close(heap)
  local_holder(path, readonly = TRUE)

  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_true(fmalloc_info(heap)$readonly)
  expect_identical(fmalloc_info(heap)$heap_id, id)
  expect_match(format(heap), "mode: +read-only", all = FALSE)
  expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked")
})

test_that("a missing directory is an fmalloc_io error", {
  path <- file.path(tempfile("no-such-dir-"), "heap.bin")
  expect_fmalloc_error(fmalloc_open(path), "fmalloc_io")
  expect_false(file.exists(path))
})

test_that("invalid arguments give fmalloc_invalid from the user's call", {
  path <- local_heap_path()
  for (bad in list(1, NA_character_, c("a", "b"), "", NULL)) {
    err <- expect_fmalloc_error(fmalloc_open(bad), "fmalloc_invalid", "`path`")
    expect_identical(conditionCall(err)[[1]], quote(fmalloc_open))
  }
  for (bad in list(-1, 0, NA_real_, Inf, "1", c(1, 2))) {
    expect_fmalloc_error(fmalloc_open(path, size_gb = bad), "fmalloc_invalid", "`size_gb`")
  }
  expect_fmalloc_error(fmalloc_open(path, readonly = NA), "fmalloc_invalid", "`readonly`")
  expect_fmalloc_error(fmalloc_open(path, verbose = "yes"), "fmalloc_invalid", "`verbose`")
  expect_false(file.exists(path))
  for (f in list(fmalloc_close, fmalloc_info, fmalloc_sync)) {
    expect_fmalloc_error(f(list()), "fmalloc_invalid", "`heap`")
    expect_fmalloc_error(f(path), "fmalloc_invalid", "`heap`")
  }
})

test_that("functions are quiet unless verbose", {
  path <- local_heap_path()
  expect_silent(heap <- fmalloc_open(path, size_gb = 0.01))
  expect_silent(fmalloc_info(heap))
  expect_silent(fmalloc_close(heap))

  expect_message(heap <- fmalloc_open(path, verbose = TRUE), "opened heap")
  expect_message(fmalloc_close(heap, verbose = TRUE), "closed heap")
  withr::local_options(fmalloc.verbose = TRUE)
  expect_message(heap <- fmalloc_open(path), basename(path), fixed = TRUE)
  expect_message(fmalloc_close(heap), "closed heap")
})

test_that("fmalloc_sync succeeds on an open writable heap and keeps the file a heap", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  id <- fmalloc_info(heap)$heap_id
  expect_null(fmalloc_sync(heap))
  fmalloc_close(heap)
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_info(heap)$heap_id, id)
})

test_that("fmalloc_sync writes the changed pages to the file", {
  # Linux shows which mapped pages are dirty (not yet written back) in
  # /proc/self/smaps; a sync that did nothing would leave them dirty.
  skip_if_not(file.exists("/proc/self/smaps"), "needs /proc/self/smaps (Linux)")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  on.exit(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  skip_if(identical(system2("stat", c("-f", "-c", "%T", shQuote(path)), stdout = TRUE), "tmpfs"),
          "tmpfs pages are never written back")
  dirty_kb <- function() {
    lines <- readLines("/proc/self/smaps")
    heads <- grep("^[0-9a-f]+-[0-9a-f]+ ", lines)
    mine <- heads[endsWith(lines[heads], paste0(" ", normalizePath(path)))]
    ends <- c(heads[-1] - 1L, length(lines))
    sum(vapply(match(mine, heads), function(k) {
      block <- lines[heads[k]:ends[k]]
      d <- grep("^(Shared|Private)_Dirty:", block, value = TRUE)
      sum(as.numeric(sub("^.*:\\s+(\\d+) kB$", "\\1", d)))
    }, 0))
  }
  values <- seq_len(2^16) * 1.5 # 512 KiB
  x <- fmalloc_save(values, "x", heap)
  x <- fmalloc_get("x", heap)
  fmalloc_sync(heap)
  x[1:2^16] <- rev(values) # in place: 128 dirty pages of the mapping
  before <- dirty_kb()
  expect_gte(before, 512)
  expect_null(fmalloc_sync(heap))
  after <- dirty_kb()
  # (A page or two may be written again by R between the sync and the look.)
  expect_lt(after, 64)
  # And the bytes are those of the file, as a second process reads them.
  info <- Rfmalloc:::.fmalloc_inspect(x)
  bytes <- callr::r(function(path, offset, n) {
    con <- file(path, "rb")
    on.exit(close(con))
    seek(con, offset)
    readBin(con, "double", n)
  }, args = list(path = path, offset = info$offset, n = 2^16))
  expect_identical(bytes, rev(values))
})

test_that("sizes print in binary units", {
  fb <- Rfmalloc:::.format_bytes
  expect_identical(fb(0), "0 B")
  expect_identical(fb(999), "999 B")
  expect_identical(fb(1000), "1.0 KiB")
  expect_identical(fb(1536), "1.5 KiB")
  expect_identical(fb(1024^3 - 4096), "1.0 GiB")
  expect_identical(fb(50 * 1024^3), "50.0 GiB")
})

test_that("opening a file twice in one session shares the heap", {
  path <- local_heap_path()
  a <- fmalloc_open(path, size_gb = 0.01)
  b <- fmalloc_open(path)
  on.exit(fmalloc_close(b))
  expect_false(attr(b, "created"))
  expect_identical(fmalloc_info(b)$heap_id, fmalloc_info(a)$heap_id)
  # Closing one handle leaves the other open.
  fmalloc_close(a)
  expect_false(fmalloc_info(b)$readonly)
  # A different mode while it is open for writing is refused.
  err <- expect_fmalloc_error(fmalloc_open(path, readonly = TRUE), "fmalloc_locked")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
})

test_that("fmalloc_info and fmalloc_sync default to the session's default heap", {
  path <- local_heap_path()
  cleanup_fmalloc()
  err <- expect_fmalloc_error(fmalloc_info(), "fmalloc_closed", "init_fmalloc")
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_info))
  expect_fmalloc_error(fmalloc_sync(), "fmalloc_closed")

  expect_true(init_fmalloc(path, size_gb = 0.01))
  on.exit(cleanup_fmalloc())
  expect_identical(fmalloc_info()$path, normalizePath(path))
  expect_null(fmalloc_sync())
})

test_that("forged and restored heap handles are fmalloc_invalid, never a crash", {
  skip_if_not_installed("callr")
  # In a child process: before handles were checked, these crashed R.
  res <- callr::r(function() {
    library(Rfmalloc)
    path <- tempfile(fileext = ".bin")
    real <- fmalloc_open(path)
    classes <- function(expr) {
      tryCatch({ expr; "no error" }, error = function(e) class(e)[1:2])
    }
    forge <- function(ptr, cls = class(real)) {
      e <- new.env()
      if (!is.null(ptr)) assign(".ptr", ptr, envir = e)
      class(e) <- cls
      e
    }
    # An external pointer that is not a heap handle.
    other <- getNativeSymbolInfo("savvy_fmalloc_has_classic__impl", "Rfmalloc")$address
    forged <- list(
      other_ptr = forge(other),
      other_ptr_short_class = forge(other, "fmalloc_heap"),
      no_ptr = forge(NULL),
      number = forge(1),
      restored = unserialize(serialize(real, NULL))
    )
    active <- new.env()
    ran <- FALSE
    makeActiveBinding(".ptr", function() { ran <<- TRUE; real$.ptr }, active)
    class(active) <- class(real)
    forged$active <- active
    # A promise in `.ptr` is not forced either.
    promised <- new.env()
    delayedAssign(".ptr", { ran <<- TRUE; real$.ptr }, assign.env = promised)
    class(promised) <- class(real)
    forged$promise <- promised
    out <- lapply(forged, function(h) c(
      create = classes(create_fmalloc_vector("double", 3, heap = h)),
      save = classes(fmalloc_save(1, "x", h)),
      get = classes(fmalloc_get("x", h)),
      ls = classes(fmalloc_ls(h)),
      info = classes(fmalloc_info(h)),
      close = classes(fmalloc_close(h))
    ))
    # The real handle still works after all that.
    fmalloc_save(1:3, "ok", real)
    list(out = out, ran = ran, ok = fmalloc_get("ok", real))
  })
  for (case in names(res$out)) {
    got <- res$out[[case]]
    expect_true(all(got[c(TRUE, FALSE)] == "fmalloc_invalid"), label = case)
    expect_true(all(got[c(FALSE, TRUE)] == "fmalloc_error"), label = case)
  }
  expect_false(res$ran) # neither the active binding's function nor the promise ran
  expect_identical(res$ok, 1:3)
})

test_that("a damaged newest commit opens the previous one with an fmalloc_recovered warning", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(1:3, "kept", heap)
  fmalloc_save(4:6, "gone", heap)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  # The slot in force is the one with the larger generation (slots at 64 and
  # 128; generation in their first 8 bytes); flip a bit of its catalog
  # checksum field, as a torn write or a bad sector would.
  bytes <- readBin(path, "raw", file.size(path))
  gen <- function(at) sum(as.integer(bytes[at + 1:4]) * 256^(0:3))
  active <- if (gen(64) > gen(128)) 64 else 128
  bytes[active + 32 + 1] <- xor(bytes[active + 32 + 1], as.raw(0x40))
  writeBin(bytes, path)
  w <- expect_warning(heap <- fmalloc_open(path, readonly = TRUE), class = "fmalloc_recovered")
  expect_match(conditionMessage(w), "'gone'", fixed = TRUE)
  expect_no_match(conditionMessage(w), "'kept'", fixed = TRUE)
  expect_identical(fmalloc_ls(heap)$name, "kept")
  expect_identical(fmalloc_get("kept", heap)[], 1:3)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  # A read-only open wrote nothing.
  expect_identical(readBin(path, "raw", file.size(path)), bytes)
  # A writable open warns too; its next commit makes the heap whole again.
  expect_warning(heap <- fmalloc_open(path), class = "fmalloc_recovered")
  fmalloc_save(7:9, "new", heap)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  expect_no_warning(heap <- fmalloc_open(path, readonly = TRUE))
  expect_setequal(fmalloc_ls(heap)$name, c("kept", "new"))
  fmalloc_close(heap)
})

# A heap (file removed when the calling test ends) of 300 objects committed
# in a batch, then "the-last-one" in a durable commit, one byte of whose leaf
# page is then changed: the newest commit is damaged, the previous intact.
local_damaged_heap <- function(env = parent.frame()) {
  path <- local_heap_path(env)
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_batch(heap, for (i in 1:300) fmalloc_save(i, sprintf("an-object-with-a-long-name-%03d", i), heap))
  fmalloc_save(42L, "the-last-one", heap)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  bytes <- readBin(path, "raw", file.size(path))
  at <- grepRaw("the-last-one", bytes, fixed = TRUE, all = TRUE)
  stopifnot(length(at) == 1) # in one leaf page, of the newest commit only
  bytes[at] <- xor(bytes[at], as.raw(0x01))
  writeBin(bytes, path)
  path
}

test_that("a damaged durable commit is not given up by a writable open unless recover = TRUE", {
  # A flushed commit cannot be torn by a crash: a byte changed in one of its
  # catalog pages afterwards made a writable open fall back to the previous
  # commit, and that open's next commit replaced the newest one for good.
  path <- local_damaged_heap()
  bytes <- readBin(path, "raw", file.size(path))
  mtime <- file.mtime(path)
  # Writable: refused, nothing written.
  err <- expect_error(fmalloc_open(path), class = "fmalloc_corrupt")
  expect_match(conditionMessage(err), "newest commit", fixed = TRUE)
  expect_match(conditionMessage(err), "recover = TRUE", fixed = TRUE)
  expect_identical(readBin(path, "raw", file.size(path)), bytes)
  expect_identical(file.mtime(path), mtime)
  # Read-only: the newest commit, its intact objects readable.
  heap <- fmalloc_open(path, readonly = TRUE)
  expect_identical(fmalloc_get("an-object-with-a-long-name-007", heap)[], 7L)
  expect_error(fmalloc_get("the-last-one", heap), class = "fmalloc_corrupt")
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  expect_identical(readBin(path, "raw", file.size(path)), bytes)
  # recover = TRUE: writable at the previous commit, with a warning.
  w <- expect_warning(heap <- fmalloc_open(path, recover = TRUE), class = "fmalloc_recovered")
  expect_match(conditionMessage(w), "newest commit (generation 3) cannot be read", fixed = TRUE)
  expect_false(fmalloc_exists("the-last-one", heap))
  fmalloc_save(43L, "after", heap)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  expect_no_warning(heap <- fmalloc_open(path))
  expect_identical(fmalloc_get("after", heap)[], 43L)
  expect_identical(fmalloc_get("an-object-with-a-long-name-300", heap)[], 300L)
  fmalloc_close(heap)
  expect_error(fmalloc_open(path, recover = NA), class = "fmalloc_invalid")
})

test_that("init_fmalloc(), local_fmalloc_heap() and with_fmalloc_heap() take recover (and sync)", {
  # Each session helper opens a damaged durable commit only when asked,
  # as fmalloc_open() does.
  path <- local_damaged_heap()
  expect_error(init_fmalloc(path), class = "fmalloc_corrupt")
  expect_warning(init_fmalloc(path, recover = TRUE), class = "fmalloc_recovered")
  expect_identical(fmalloc_get("an-object-with-a-long-name-300")[], 300L)
  cleanup_fmalloc()
  path <- local_damaged_heap()
  expect_error(with_fmalloc_heap(path, 1), class = "fmalloc_corrupt")
  got <- NULL
  expect_warning(
    got <- with_fmalloc_heap(path, fmalloc_get("an-object-with-a-long-name-001")[], recover = TRUE),
    class = "fmalloc_recovered"
  )
  expect_identical(got, 1L)
  path <- local_damaged_heap()
  f <- function(...) {
    local_fmalloc_heap(path, ...)
    fmalloc_save(5L, "five")
    fmalloc_exists("the-last-one")
  }
  expect_error(f(), class = "fmalloc_corrupt")
  expect_false(suppressWarnings(f(recover = TRUE, sync = "none")))
  expect_error(f(sync = "sometimes"), class = "fmalloc_invalid")
  heap <- fmalloc_open(path, readonly = TRUE)
  expect_identical(fmalloc_get("five", heap)[], 5L)
  fmalloc_close(heap)
})

test_that("a new heap file at the path of a deleted open one is a new heap", {
  # Issue 9, item 7: the in-process registry was keyed by path, so opening
  # the new file returned the old (deleted) heap and saves into it were lost.
  skip_if_not_installed("callr")
  skip_on_os("windows") # an open file cannot be deleted there
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  old_id <- fmalloc_info(heap)$heap_id
  old <- fmalloc_save(c(1.5, 2.5), "old", heap) # a live vector of the old heap
  expect_message(fmalloc_close(heap), "1 vector made from it is still in use", class = "fmalloc_pinned")
  expect_true(file.remove(path))
  heap <- fmalloc_open(path, size_gb = 0.01)
  expect_false(identical(fmalloc_info(heap)$heap_id, old_id))
  expect_false(fmalloc_exists("old", heap))
  fmalloc_save(1:3, "new", heap)
  fmalloc_close(heap)
  invisible(gc()) # the vector fmalloc_save() returned holds the new heap
  # The old vector still reads its own (deleted) file.
  expect_identical(old[], c(1.5, 2.5))
  # What was saved is in the file at the path, as a second process sees it.
  res <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    list(names = Rfmalloc::fmalloc_ls(heap)$name, new = Rfmalloc::fmalloc_get("new", heap)[])
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(res$names, "new")
  expect_identical(res$new, 1:3)
  rm(old)
  invisible(gc())
})

test_that("failures returned instead of raised become the same classed conditions", {
  # The returned form of the error mechanism (create_fmalloc_vector()'s hot
  # path, fmalloc_get()) and the raised one give the same classes, raised
  # from the user's call.
  heap <- local_heap()
  err <- expect_fmalloc_error(create_fmalloc_vector("list", 1, heap = heap), "fmalloc_invalid")
  expect_identical(conditionCall(err)[[1]], quote(create_fmalloc_vector))
  expect_false(grepl("<fmalloc_", conditionMessage(err), fixed = TRUE))
  err <- expect_fmalloc_error(fmalloc_get("missing", heap), "fmalloc_not_found")
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_get))
  expect_false(grepl("<fmalloc_", conditionMessage(err), fixed = TRUE))
  err <- expect_fmalloc_error(fmalloc_rm("missing", heap), "fmalloc_not_found")
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_rm))
  # A message without a tag (Rust never makes one) still has a subclass:
  # fmalloc_internal (issue 9, item 10).
  err <- expect_fmalloc_error(Rfmalloc:::.fmalloc_raise("Rfmalloc: plain", NULL), "fmalloc_internal")
  expect_identical(conditionMessage(err), "Rfmalloc: plain")
})

test_that("a writable open and close without changes leaves every byte of the file as it was", {
  # The allocator is rebuilt at every writable open; headers that are
  # already right are read, not written (issue 8: no page written back).
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  for (i in 1:50) fmalloc_save(as.double(i:(i + 99)), sprintf("x%02d", i), heap)
  fmalloc_save(c("a", NA), "s", heap)
  fmalloc_rm("x07", heap) # a free gap between live blocks
  fmalloc_close(heap)
  invisible(gc())
  # The session that built the heap (blocks freed into the allocator's
  # cache, free lists linked in the order of the frees) left, at its clean
  # close, the headers the rebuild writes: from the first writable open on,
  # open and close change nothing (before, the first one changed bytes).
  before <- readBin(path, "raw", file.size(path))
  for (k in 1:2) {
    heap <- fmalloc_open(path)
    expect_identical(fmalloc_get("x10", heap)[], as.double(10:109))
    fmalloc_close(heap)
    invisible(gc())
    expect_identical(readBin(path, "raw", file.size(path)), before)
  }
  # So does a writable open in another process.
  callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path)
    Rfmalloc::fmalloc_close(heap)
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(readBin(path, "raw", file.size(path)), before)
})

test_that("space a session left to vectors alive at its end comes back at the next open", {
  path <- local_heap_path()
  callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, size_gb = 0.01)
    Rfmalloc::fmalloc_save(1:10, "keep", heap)
    x <- Rfmalloc::create_fmalloc_vector("double", 5e6, heap = heap) # 40 MB, no name
    x[] <- 1
    Rfmalloc::fmalloc_info(heap)$disk # the process ends with x alive
  }, args = list(path = path), libpath = .libPaths()) -> disk_then
  expect_gt(disk_then, 40e6)
  heap <- fmalloc_open(path)
  # The open found x's block free; its disk space stayed taken for good
  # (the space was reused, never given back: 16.7 GB after a stray big
  # vector).
  expect_lt(fmalloc_info(heap)$disk, 16 * 2^20)
  expect_identical(fmalloc_get("keep", heap, copy = TRUE), 1:10)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  fmalloc_save(as.double(1:1e6), "more", heap)
  fmalloc_close(heap)
  invisible(gc())
  # After that clean close, a writable open changes nothing again.
  before <- readBin(path, "raw", file.size(path))
  heap <- fmalloc_open(path)
  expect_identical(fmalloc_get("more", heap, copy = TRUE)[1e6], 1e6)
  fmalloc_close(heap)
  invisible(gc())
  expect_identical(readBin(path, "raw", file.size(path)), before)
})

test_that("a damaged allocator header of a named block is repaired at a writable open", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  mark <- c(1234567.8125, -7654321.5, 42.25)
  fmalloc_save(c(mark, 1:97), "x", heap)
  fmalloc_save(as.double(1:100), "y", heap)
  fmalloc_close(heap)
  invisible(gc())
  heap <- fmalloc_open(path) # headers as this heap writes them
  fmalloc_close(heap)
  bytes <- readBin(path, "raw", file.size(path))
  at <- grepRaw(writeBin(mark, raw(), endian = "little"), bytes, fixed = TRUE)
  expect_length(at, 1L)
  header <- (at - 32L):(at - 17L) # span word and check tag before the payload
  good <- bytes[header]
  # A span that would swallow the next block, and a forged tag.
  bytes[header] <- as.raw(c(0x40, 0x00, 0x10, rep(0, 5), rep(0xAB, 8)))
  writeBin(bytes, path)
  heap <- fmalloc_open(path)
  expect_identical(fmalloc_get("x", heap)[1:3], mark)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  fmalloc_close(heap)
  invisible(gc())
  expect_identical(readBin(path, "raw", file.size(path))[header], good)
  # The allocator works from the repaired header: freeing x and saving
  # more leaves y intact.
  heap <- fmalloc_open(path)
  fmalloc_rm("x", heap)
  for (i in 1:5) fmalloc_save(as.double(i + 1:100), sprintf("z%d", i), heap)
  expect_identical(fmalloc_get("y", heap)[], as.double(1:100))
  expect_identical(nrow(fmalloc_check(heap)), 0L)
  fmalloc_close(heap)
})

test_that("a pseudo-file that reports length 0 is refused before anything is written", {
  # /proc/self/comm (the process's name) reads as length 0 and takes
  # writes: creating a heap there wrote the header into it (as root,
  # /proc/sys files would have taken it too) before failing.
  skip_if_not(file.exists("/proc/self/comm"))
  before <- readLines("/proc/self/comm")
  expect_error(fmalloc_open("/proc/self/comm", size_gb = 0.01), class = "fmalloc_error")
  expect_identical(readLines("/proc/self/comm"), before)
})

# Whether the newest catalog slot of the heap at `path` carries the unsynced
# flag (inst/FORMAT.md: slots at 64 and 128, generation at +0, flags at +52).
newest_slot_unsynced <- function(path) {
  b <- readBin(path, "raw", 192L)
  gen <- function(at) sum(as.numeric(b[at + 1:8]) * 256^(0:7))
  at <- if (gen(64) >= gen(128)) 64 else 128
  bitwAnd(as.integer(b[at + 53L]), 1L) == 1L
}

test_that("the handles of one file share its sync mode: another open does not change it", {
  # The last open won: a second fmalloc_open(sync = "none"), closed at
  # once, left a durable handle's commits unflushed, and a reference
  # unserialized in the writer (which opens the heap) made an unsynced
  # heap flush every commit.
  path <- local_heap_path()
  h <- fmalloc_open(path, size_gb = 0.01) # "commit"
  err <- expect_fmalloc_error(fmalloc_open(path, sync = "none"), "fmalloc_invalid")
  expect_match(conditionMessage(err), 'open already with sync = "commit"', fixed = TRUE)
  h2 <- fmalloc_open(path) # shares the mode
  expect_identical(fmalloc_info(h2)$sync, "commit")
  fmalloc_close(h2)
  # The default vector passed on explicitly chooses nothing (match.arg()).
  h2 <- fmalloc_open(path, sync = c("commit", "none"))
  fmalloc_close(h2)
  fmalloc_save(1, "a", h)
  expect_false(newest_slot_unsynced(path))
  x <- unserialize(serialize(fmalloc_ref(fmalloc_get("a", h)), NULL))
  fmalloc_save(2, "b", h)
  expect_false(newest_slot_unsynced(path))
  fmalloc_close(h)
  # The other way round: an unsynced handle stays unsynced.
  h <- fmalloc_open(path, sync = "none")
  y <- unserialize(serialize(fmalloc_ref(fmalloc_get("a", h)), NULL))
  h2 <- fmalloc_open(path, sync = "none")
  fmalloc_close(h2)
  h2 <- fmalloc_open(path)
  fmalloc_close(h2)
  fmalloc_save(3, "c", h)
  expect_true(newest_slot_unsynced(path))
  expect_identical(fmalloc_info(h)$sync, "none")
  # Unserializing a reference in the writer does not flush it either.
  z <- unserialize(serialize(fmalloc_ref(fmalloc_get("c", h)), NULL))
  expect_true(newest_slot_unsynced(path))
  expect_fmalloc_error(fmalloc_open(path, sync = "commit"), "fmalloc_invalid")
  fmalloc_close(h)
  # No handle open (vectors may still hold the heap): the next open chooses.
  h <- fmalloc_open(path)
  fmalloc_save(4, "d", h)
  expect_false(newest_slot_unsynced(path))
  fmalloc_close(h)
  rm(x, y, z)
  invisible(gc())
})
