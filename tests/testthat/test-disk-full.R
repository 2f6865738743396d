# A full disk, a sparse copy on a full disk, and a file size limit give
# errors of class fmalloc_full, never SIGBUS or SIGXFSZ, and the heap stays
# usable. Each scenario runs in a child R process: a signal kills the child,
# which fails the test, and the mounts made here are undone whatever happens.

# Mounts a small file system of `type` ("tmpfs" or "ext4", a loop-mounted
# image) on a new directory until the calling test ends; skips the test
# unless running as root on Linux with the tools needed.
local_small_fs <- function(type, mib, env = parent.frame()) {
  skip_on_cran()
  skip_if_not(Sys.info()[["sysname"]] == "Linux", "mounts need Linux")
  skip_if_not(Sys.info()[["effective_user"]] == "root", "mounts need root")
  dir <- tempfile(paste0("fs-", type, "-"))
  dir.create(dir)
  withr::defer(unlink(dir, recursive = TRUE), envir = env)
  if (type == "tmpfs") {
    args <- c("-t", "tmpfs", "-o", sprintf("size=%dm", mib), "tmpfs", dir)
  } else {
    skip_if(Sys.which("mkfs.ext4") == "", "no mkfs.ext4")
    img <- tempfile("ext4-", fileext = ".img")
    withr::defer(unlink(img), envir = env)
    con <- file(img, "wb")
    seek(con, mib * 1024^2 - 1, rw = "write")
    writeBin(as.raw(0), con)
    close(con)
    made <- system2("mkfs.ext4", c("-q", "-F", img), stdout = FALSE, stderr = FALSE)
    skip_if(made != 0, "mkfs.ext4 failed")
    args <- c("-o", "loop", img, dir)
  }
  mounted <- system2("mount", args, stdout = FALSE, stderr = FALSE)
  skip_if(mounted != 0, paste("cannot mount a", type))
  # Deferred after the unlinks, so it runs before them; a busy mount (a
  # child still exiting) is detached instead.
  withr::defer({
    if (system2("umount", dir, stdout = FALSE, stderr = FALSE) != 0) {
      system2("umount", c("-l", dir), stdout = FALSE, stderr = FALSE)
    }
  }, envir = env)
  dir
}

# Fills a file system by writing a file until it is full.
fill_fs <- function(dir) {
  path <- file.path(dir, "filler")
  con <- file(path, "wb")
  block <- raw(1024^2)
  tryCatch(repeat writeBin(block, con), error = function(e) NULL, warning = function(w) NULL)
  try(close(con), silent = TRUE)
  path
}

# Child: vectors until the disk is full, then what a user does next. Returns
# what happened at each step.
full_disk_child <- function(path) {
  library(Rfmalloc)
  heap <- fmalloc_open(path, size_gb = 1)
  fmalloc_save(c(1.5, 2.5, 3.5), "keep", heap = heap)
  what <- function(expr) tryCatch({ expr; "ok" }, error = function(e) class(e)[1])
  keep <- list()
  first <- what(repeat {
    v <- create_fmalloc_vector("double", 2^19, heap = heap)
    v[] <- 1
    keep[[length(keep) + 1L]] <- v
  })
  small <- what({ x <- create_fmalloc_vector("double", 1000, heap = heap); x[] <- 2 })
  saves <- what(for (i in 1:20) fmalloc_save(runif(1e5), paste0("s", i), heap = heap))
  many <- what(for (i in 1:2000) {
    y <- create_fmalloc_vector("integer", 100, heap = heap)
    y[] <- 1L
    keep[[length(keep) + 1L]] <- y
  })
  keep <- NULL
  invisible(gc())
  after <- what(fmalloc_save(seq_len(1e5), "after", heap = heap))
  fmalloc_close(heap)
  list(first = first, small = small, saves = saves, many = many, after = after)
}

# Child: the named objects made by full_disk_child() are intact.
reopen_child <- function(path) {
  library(Rfmalloc)
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  after <- if (fmalloc_exists("after", heap)) sum(fmalloc_get("after", heap))
  list(keep = fmalloc_get("keep", heap)[], after = after)
}

# `reuse`: a later save must find the space freed vectors gave back. Not
# asserted on ext4 yet: the allocator may pick a free block in unreserved
# space over one in reserved space (left undone, see NEWS).
expect_full_disk_handled <- function(dir, reuse = TRUE) {
  path <- file.path(dir, "heap.bin")
  res <- callr::r(full_disk_child, list(path = path), libpath = .libPaths())
  expect_equal(res$first, "fmalloc_full")
  expect_equal(res$small, "ok")
  expect_true(res$saves %in% c("ok", "fmalloc_full"))
  expect_true(res$many %in% c("ok", "fmalloc_full"))
  back <- callr::r(reopen_child, list(path = path), libpath = .libPaths())
  expect_equal(back$keep, c(1.5, 2.5, 3.5))
  if (reuse) {
    expect_equal(res$after, "ok")
    expect_equal(back$after, sum(seq_len(1e5)))
  } else {
    expect_true(res$after %in% c("ok", "fmalloc_full"))
  }
}

test_that("a full tmpfs gives fmalloc_full and the heap stays usable", {
  expect_full_disk_handled(local_small_fs("tmpfs", 64))
})

test_that("a full ext4 gives fmalloc_full and the heap stays usable", {
  expect_full_disk_handled(local_small_fs("ext4", 64), reuse = FALSE)
})

test_that("a sparse copy on a full disk opens; writing a hole is fmalloc_full", {
  dir <- local_small_fs("tmpfs", 64)
  orig <- file.path(dir, "orig.bin")
  copy <- file.path(dir, "copy.bin")
  callr::r(function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path, size_gb = 0.03)
    fmalloc_save(rep(7, 2^18), "data", heap = heap)
    fmalloc_save(double(2^18), "zeros", heap = heap)
    fmalloc_close(heap)
  }, list(path = orig), libpath = .libPaths())
  expect_equal(system2("cp", c("--sparse=always", orig, copy)), 0L)
  unlink(orig)
  filler <- fill_fs(dir)
  use_copy <- function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path)
    on.exit(fmalloc_close(heap))
    what <- function(expr) tryCatch({ expr; "ok" }, error = function(e) class(e)[1])
    zeros <- what({ z <- fmalloc_get("zeros", heap); z[] <- 1 })
    # Reserved in whole 2 MiB units (large folios), so even an object
    # without holes may be refused while its neighbours are holes.
    data <- tryCatch(sum(fmalloc_get("data", heap)), error = function(e) class(e)[1])
    small <- what(for (i in 1:200) {
      x <- create_fmalloc_vector("double", 1000, heap = heap)
      x[] <- 1
    })
    big <- what(fmalloc_save(runif(2e6), "big", heap = heap))
    list(zeros = zeros, data = data, small = small, big = big,
         names = sort(fmalloc_ls(heap)$name))
  }
  res <- callr::r(use_copy, list(path = copy), libpath = .libPaths())
  expect_equal(res$zeros, "fmalloc_full")
  expect_true(identical(res$data, 7 * 2^18) || identical(res$data, "fmalloc_full"))
  expect_true(res$small %in% c("ok", "fmalloc_full"))
  expect_equal(res$big, "fmalloc_full")
  expect_equal(res$names, c("data", "zeros"))
  # With space again the same object can be written in place.
  unlink(filler)
  res <- callr::r(function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path)
    on.exit(fmalloc_close(heap))
    z <- fmalloc_get("zeros", heap)
    z[] <- 1
    rm(z)
    c(sum(fmalloc_get("zeros", heap)), sum(fmalloc_get("data", heap)))
  }, list(path = copy), libpath = .libPaths())
  expect_equal(res, c(2^18, 7 * 2^18))
})

test_that("a file size limit (ulimit -f) gives fmalloc_full, not SIGXFSZ", {
  skip_on_cran()
  skip_on_os("windows")
  skip_if(Sys.which("bash") == "", "no bash")
  path <- local_heap_path()
  field <- run_under_file_limit(c(
    "library(Rfmalloc)",
    "path <- commandArgs(TRUE)[1]",
    "what <- function(expr) tryCatch({ expr; 'ok' }, error = function(e) class(e)[1])",
    "cat('big', what(init_fmalloc(path, size_gb = 1)), '\\n')",
    "cat('default', what(init_fmalloc(path)), '\\n')",
    "keep <- list()",
    "cat('grow', what(for (i in 1:100) {",
    "  v <- create_fmalloc_vector('double', 2^20); v[] <- 1; keep[[i]] <- v",
    "}), '\\n')",
    "cat('small', what({ x <- create_fmalloc_vector('double', 1000); x[] <- 2 }), '\\n')",
    "cat('size', file.size(path), '\\n')"
  ), path)
  expect_equal(field("big"), "fmalloc_full")
  expect_equal(field("default"), "ok")
  expect_equal(field("grow"), "fmalloc_full")
  expect_equal(field("small"), "ok")
  expect_lte(as.numeric(field("size")), 40000 * 1024)
})

# Space comes back: the file's disk use drops when a big object goes, and
# the space is usable again (and takes disk space again) afterwards.
expect_space_returned <- function(dir) {
  path <- file.path(dir, "punch.bin")
  heap <- fmalloc_open(path, size_gb = 0.1)
  on.exit({ fmalloc_close(heap); gc() }, add = TRUE)
  fmalloc_save(as.double(seq_len(5e6)), "big", heap) # 40 MB
  fmalloc_save(1:10, "small", heap)
  fmalloc_sync(heap)
  before <- fmalloc_info(heap)$disk
  expect_gt(before, 40e6)
  fmalloc_rm("big", heap)
  gc()
  after <- fmalloc_info(heap)$disk
  expect_lt(after, before - 30e6)
  # The freed space is reused, reads back what is written, and the rest
  # of the heap is intact.
  fmalloc_save(rep(2.5, 5e6), "again", heap)
  expect_identical(sum(fmalloc_get("again", heap)), 1.25e7)
  expect_identical(fmalloc_get("small", heap), 1:10)
  expect_gt(fmalloc_info(heap)$disk, after + 30e6)
  expect_identical(nrow(fmalloc_check(heap)), 0L)
}

test_that("removing a big object gives its disk space back (ext4)", {
  expect_space_returned(local_small_fs("ext4", 256))
})

test_that("removing a big object gives its disk space back (tmpfs)", {
  expect_space_returned(local_small_fs("tmpfs", 256))
})

# Child: a request larger than the free space, through growth (a small
# heap) and inside the heap's own space (a heap sized past the disk). Each
# is fmalloc_full, and neither keeps disk space nor grows the file.
oversized_child <- function(dir) {
  library(Rfmalloc)
  free <- function() {
    out <- system2("df", c("-B1", "--output=avail", dir), stdout = TRUE)
    as.numeric(out[[2]])
  }
  what <- function(expr) tryCatch({ expr; "ok" }, error = function(e) class(e)[1])
  small <- file.path(dir, "small.bin")
  heap <- fmalloc_open(small, size_gb = 0.01)
  fmalloc_save(1:10, "keep", heap)
  before <- c(size = file.size(small), free = free())
  grown <- what(fmalloc_save(as.double(seq_len(1.5e7)), "x", heap))   # 120 MB
  after_grow <- c(size = file.size(small), free = free())
  keep <- fmalloc_get("keep", heap, copy = TRUE)
  fmalloc_close(heap)
  big <- file.path(dir, "big.bin")
  heap <- fmalloc_open(big, size_gb = 0.5)   # sparse, larger than the disk
  before_big <- free()
  inside <- what(create_fmalloc_vector("double", 1.5e7, heap = heap))
  after_big <- free()
  small_ok <- what(fmalloc_save(1:1000, "y", heap))
  fmalloc_close(heap)
  list(grown = grown, before = before, after_grow = after_grow, keep = keep,
       inside = inside, before_big = before_big, after_big = after_big,
       small_ok = small_ok)
}

expect_oversized_refused <- function(dir) {
  res <- callr::r(oversized_child, list(dir))
  expect_identical(res$grown, "fmalloc_full")
  # Refused before growing: the file did not grow, the disk's free space
  # did not shrink.
  expect_identical(res$after_grow[["size"]], res$before[["size"]])
  expect_gt(res$after_grow[["free"]], res$before[["free"]] - 2^20)
  expect_identical(res$keep, 1:10)
  # Inside the heap: what the failed reservations got is given back, and
  # the units the headers of the blocks tried took (2 MiB each); at most a
  # chunk (4 MiB) reserved whole before the failure stays, for later
  # allocations. Before: the whole disk stayed taken (ext4), or 8-16 MiB.
  expect_identical(res$inside, "fmalloc_full")
  expect_gt(res$after_big, res$before_big - 8 * 2^20)
  expect_identical(res$small_ok, "ok")
}

test_that("a request larger than the free space keeps no disk space (ext4)", {
  expect_oversized_refused(local_small_fs("ext4", 64))
})

test_that("a request larger than the free space keeps no disk space (tmpfs)", {
  expect_oversized_refused(local_small_fs("tmpfs", 64))
})

# Child: on a full disk, a write of longer strings (the string pool must
# grow) fails before it writes any of them.
full_string_write_child <- function(dir) {
  library(Rfmalloc)
  path <- file.path(dir, "s.bin")
  heap <- fmalloc_open(path, size_gb = 0.5)
  fmalloc_save(rep("x", 1e5), "s", heap)
  filler <- file.path(dir, "filler")
  con <- file(filler, "wb")
  tryCatch(repeat writeBin(raw(2^20), con), error = function(e) NULL, warning = function(w) NULL)
  try(close(con), silent = TRUE)
  err <- tryCatch({
    fmalloc_write(heap, "s", 1:1e5, rep(strrep("y", 200), 1e5))
    "ok"
  }, error = function(e) class(e)[1])
  changed <- sum(fmalloc_get("s", heap, copy = TRUE) != "x")
  unlink(filler)
  # With space again the same write goes through.
  fmalloc_write(heap, "s", 1:1e5, rep(strrep("y", 200), 1e5))
  list(err = err, changed = changed, after = unique(fmalloc_get("s", heap, copy = TRUE)))
}

test_that("a string write on a full disk is fmalloc_full and changes nothing", {
  res <- callr::r(full_string_write_child, list(local_small_fs("tmpfs", 64)))
  expect_identical(res$err, "fmalloc_full")
  expect_identical(res$changed, 0L)
  expect_identical(res$after, strrep("y", 200))
})

# Child: a character vector whose string pool grows in place (nothing after
# it in a heap larger than the disk) until the disk is full.
full_pool_growth_child <- function(dir) {
  library(Rfmalloc)
  free <- function() {
    as.numeric(system2("df", c("-B1", "--output=avail", dir), stdout = TRUE)[[2]])
  }
  heap <- fmalloc_open(file.path(dir, "s.bin"), size_gb = 0.5)
  x <- create_fmalloc_vector("character", 1e5, heap = heap)
  x[] <- "x"
  before <- free()
  err <- tryCatch({
    x[] <- strrep("y", 1000)   # 100 MB of strings on a 64 MB disk
    "ok"
  }, error = function(e) class(e)[1])
  after <- free()
  info <- fmalloc_info(heap)
  written <- sum(x == strrep("y", 1000))
  later <- tryCatch({ fmalloc_save(1:1e5, "later", heap); "ok" }, error = function(e) class(e)[1])
  list(err = err, before = before, after = after, disk = info$disk, used = info$used,
       written = written,
       rest = unique(x[(written + 1):1e5]), later = later)
}

test_that("a string pool that cannot grow in place keeps no disk space (ext4)", {
  res <- callr::r(full_pool_growth_child, list(local_small_fs("ext4", 64)))
  expect_identical(res$err, "fmalloc_full")
  # What the failed growth reserved is given back: the file takes on disk
  # what the heap uses (the strings written), to the chunks reserved
  # whole. Before, the failed fallocate kept the rest of the disk: all 44
  # MiB free taken, 53 MiB on disk for 26 MiB used.
  expect_gt(res$after, 0)
  expect_lt(res$disk, res$used + 12 * 2^20)
  # Element by element, as documented: the strings before the one that
  # found no room are written, the others unchanged.
  expect_gt(res$written, 0)
  expect_identical(res$rest, "x")
  expect_identical(res$later, "ok")
})

# Child: a sparse copy of a heap on a full tmpfs, where reading a hole
# through a mapping needs a new page (SIGBUS when there is none): a named
# vector of zeros (reserved, never written) and the page of the allocator's
# last header are holes.
sparse_tmpfs_child <- function(dir) {
  library(Rfmalloc)
  what <- function(expr) tryCatch(expr, error = function(e) class(e)[1])
  src <- tempfile(fileext = ".bin")
  heap <- fmalloc_open(src, size_gb = 0.01)
  fmalloc_save(1:10, "x", heap)
  z <- create_fmalloc_vector("double", 4e6, heap = heap, name = "z")
  s <- create_fmalloc_vector("character", 1e5, heap = heap, name = "s") # a pool's unused room
  rm(z, s)
  fmalloc_close(heap)
  invisible(gc())
  dst <- file.path(dir, "h.bin")
  system2("cp", c("--sparse=always", src, dst))
  unlink(src)
  system2("fallocate", c("--punch-hole", "--offset", format(file.size(dst) - 4096, scientific = FALSE),
                         "--length", "4096", dst))
  con <- file(file.path(dir, "filler"), "wb")
  tryCatch(repeat writeBin(raw(2^20), con), error = function(e) NULL, warning = function(w) NULL)
  try(close(con), silent = TRUE)
  check <- what(nrow(fmalloc_check(dst)))
  ro <- fmalloc_open(dst, readonly = TRUE)
  ro_z <- what(sum(fmalloc_get("z", ro)))
  ro_x <- what(fmalloc_get("x", ro)[])
  fmalloc_close(ro)
  invisible(gc())
  rw <- fmalloc_open(dst)
  rw_check <- what(fmalloc_check(rw))
  rw_z <- what(sum(fmalloc_get("z", rw)))
  rw_save <- what(fmalloc_save(1:5, "y", rw))
  fmalloc_close(rw)
  list(check = check, ro_z = ro_z, ro_x = ro_x, rw_check = rw_check, rw_z = rw_z,
       rw_save = rw_save)
}

test_that("holes of a heap on a full tmpfs are read as zeros, never SIGBUS", {
  skip_if(Sys.which("fallocate") == "" || Sys.which("cp") == "", "no fallocate or cp")
  res <- callr::r(sparse_tmpfs_child, list(local_small_fs("tmpfs", 48)))
  # Each of these killed R with SIGBUS (fmalloc_check(path), the sum of
  # the read-only vector, and the writable open's rebuild of the headers).
  expect_identical(res$check, 0L)
  expect_identical(res$ro_z, 0)
  expect_identical(res$ro_x, 1:10)
  # Writable: the check reads the holes as zeros too (it died with SIGBUS
  # after the three above were fixed); the holes need disk space to be
  # written, which a full disk refuses.
  expect_identical(nrow(res$rw_check), 0L)
  expect_identical(res$rw_z, "fmalloc_full")
  expect_identical(res$rw_save, "fmalloc_full")
})
