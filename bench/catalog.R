# Benchmark: the catalog at scale (issue 8), against a directory of .rds files.
#
#   Rscript bench/catalog.R [sizes] [reps] [dir]
#     sizes: comma-separated numbers of objects (default 10,1000,10000,100000);
#            "cold": only the cold reopen at the end (reps runs of it, default 7)
#     reps:  repetitions per timed operation (default 15); medians are shown
#     dir:   where the files go (default tempdir())
#
# Objects are double(100) (800 bytes of data each). Four stores, same run:
#   durable   fmalloc_open(sync = "commit"): every save is a durable commit
#   batched   the same heap mode, the operations inside fmalloc_batch()
#   unsynced  fmalloc_open(sync = "none"): flushes only at fmalloc_sync()/close
#   rds       one saveRDS() file per object in a directory
# Operations (milliseconds unless said):
#   save1   save one more object          rm      remove one object
#   ls      fmalloc_ls() / list.files()    exists  fmalloc_exists() / file.exists()
#   open+get  in a new R process: open read-only and get one object (timed
#             inside that process, library already loaded) / readRDS()
#   rw open   open for writing (heap closed before) / -
#   build   seconds to store all n objects (durable: one commit each, only up
#           to 10 000 objects; batched: one batch). bench/catalog-build.R
#           repeats it, each build in a new process, and shows whether the
#           time per object grows with n
#   size    MiB of disk used (du)
# Then: a cold reopen of one 1e8-double vector in a new process, time to the
# first element, split into its parts, and ff's (if installed) for comparison.
# Not a test: timings depend on the machine.

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
cold_only <- length(args) >= 1 && identical(args[[1]], "cold")
sizes <- if (cold_only) numeric(0) else if (length(args) >= 1) as.numeric(strsplit(args[[1]], ",")[[1]]) else c(10, 1000, 10000, 1e5)
reps <- if (length(args) >= 2) as.integer(args[[2]]) else if (cold_only) 7L else 15L
dir <- if (length(args) >= 3) args[[3]] else tempdir()

# Sys.time() has microsecond resolution (proc.time() only milliseconds).
ms <- function(expr) {
  t0 <- Sys.time()
  force(expr)
  as.numeric(Sys.time() - t0, units = "secs") * 1000
}
med <- function(x) stats::median(x)
du_mib <- function(path) {
  out <- system2("du", c("-sk", shQuote(path)), stdout = TRUE)
  as.numeric(strsplit(out[[1]], "\t")[[1]][[1]]) / 1024
}
obj <- double(100)
name_of <- function(i) sprintf("obj%06d", i)

# Timed in a new R process (library loaded before the clock starts).
child_open_get <- function(path, name, rds = FALSE) {
  callr::r(function(path, name, rds) {
    suppressPackageStartupMessages(library(Rfmalloc))
    t0 <- Sys.time()
    if (rds) {
      x <- readRDS(file.path(path, paste0(name, ".rds")))
    } else {
      h <- fmalloc_open(path, readonly = TRUE)
      x <- fmalloc_get(name, h)
    }
    first <- x[[1]]
    as.numeric(Sys.time() - t0, units = "secs") * 1000
  }, args = list(path = path, name = name, rds = rds), libpath = .libPaths())
}

bench_heap <- function(n, mode) {
  path <- tempfile(sprintf("cat-%s-%d-", mode, n), dir, fileext = ".bin")
  sync <- if (mode == "unsynced") "none" else "commit"
  heap <- fmalloc_open(path, size_gb = 0.25, sync = sync)
  build <- NA_real_
  if (mode == "batched") {
    build <- ms(fmalloc_batch(heap, for (i in seq_len(n)) fmalloc_save(obj, name_of(i), heap))) / 1000
  } else if (mode == "unsynced" || n <= 10000) {
    build <- ms({
      for (i in seq_len(n)) fmalloc_save(obj, name_of(i), heap)
      if (mode == "unsynced") fmalloc_sync(heap)
    }) / 1000
  } else {
    # Durable one-by-one at 100 000 would take minutes: built in a batch.
    fmalloc_batch(heap, for (i in seq_len(n)) fmalloc_save(obj, name_of(i), heap))
  }
  invisible(gc())
  timed <- function(f) {
    if (mode == "batched") {
      out <- NULL
      fmalloc_batch(heap, out <- f())
      out
    } else {
      f()
    }
  }
  save1 <- timed(function() vapply(seq_len(reps), function(k) ms(fmalloc_save(obj, sprintf("extra%03d", k), heap)), 0))
  rm1 <- timed(function() vapply(seq_len(reps), function(k) ms(fmalloc_rm(sprintf("extra%03d", k), heap)), 0))
  ls <- vapply(seq_len(max(3L, reps %/% 3L)), function(k) ms(fmalloc_ls(heap)), 0)
  pick <- name_of(sample.int(n, reps, replace = TRUE))
  ex <- vapply(pick, function(nm) ms(fmalloc_exists(nm, heap)), 0)
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  rw <- vapply(seq_len(max(3L, reps %/% 3L)), function(k) {
    t <- ms(h <- fmalloc_open(path))
    fmalloc_close(h)
    rm(h)
    invisible(gc())
    t
  }, 0)
  og <- if (mode == "durable") {
    vapply(pick[seq_len(min(reps, 7L))], function(nm) child_open_get(path, nm), 0)
  } else {
    NA_real_
  }
  size <- du_mib(path)
  unlink(path)
  c(save1 = med(save1), rm = med(rm1), ls = med(ls), exists = med(ex),
    open_get = med(og), rw_open = med(rw), build = build, size = size)
}

bench_rds <- function(n) {
  d <- tempfile(sprintf("cat-rds-%d-", n), dir)
  dir.create(d)
  file_of <- function(nm) file.path(d, paste0(nm, ".rds"))
  build <- ms(for (i in seq_len(n)) saveRDS(obj, file_of(name_of(i)))) / 1000
  save1 <- vapply(seq_len(reps), function(k) ms(saveRDS(obj, file_of(sprintf("extra%03d", k)))), 0)
  rm1 <- vapply(seq_len(reps), function(k) ms(file.remove(file_of(sprintf("extra%03d", k)))), 0)
  ls <- vapply(seq_len(max(3L, reps %/% 3L)), function(k) ms(list.files(d)), 0)
  pick <- name_of(sample.int(n, reps, replace = TRUE))
  ex <- vapply(pick, function(nm) ms(file.exists(file_of(nm))), 0)
  og <- vapply(pick[seq_len(min(reps, 7L))], function(nm) child_open_get(d, nm, rds = TRUE), 0)
  size <- du_mib(d)
  unlink(d, recursive = TRUE)
  c(save1 = med(save1), rm = med(rm1), ls = med(ls), exists = med(ex),
    open_get = med(og), rw_open = NA, build = build, size = size)
}

set.seed(1)
rows <- list()
for (n in sizes) {
  for (mode in c("durable", "batched", "unsynced")) {
    rows[[length(rows) + 1]] <- c(n = n, store = mode, round(bench_heap(n, mode), 3))
    print(rows[[length(rows)]])
  }
  rows[[length(rows) + 1]] <- c(n = n, store = "rds", round(bench_rds(n), 3))
  print(rows[[length(rows)]])
  cat(sprintf("n = %g done\n", n))
}
tab <- as.data.frame(do.call(rbind, rows), stringsAsFactors = FALSE)
cat(sprintf("\n%s, R %s, %d reps (medians; ms, build in s, size in MiB)\n\n",
            format(Sys.time(), "%Y-%m-%d %H:%M UTC", tz = "UTC"), getRversion(), reps))
if (length(sizes)) {
cat("| n | store | save1 | rm | ls | exists | open+get | rw open | build (s) | size (MiB) |\n")
cat("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
}
for (i in seq_len(nrow(tab))) {
  r <- tab[i, ]
  f <- function(v) if (is.na(v) || v == "NA") "–" else v
  cat(sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
              format(as.numeric(r$n), big.mark = " ", scientific = FALSE), r$store,
              f(r$save1), f(r$rm), f(r$ls), f(r$exists), f(r$open_get), f(r$rw_open),
              f(r$build), f(r$size)))
}

# ---------------------------------------------------------------------------
# Cold reopen of one 1e8-double vector: time to the first element.
# ---------------------------------------------------------------------------
N <- 1e8
big <- tempfile("cat-big-", dir, fileext = ".bin")
h <- fmalloc_open(big, size_gb = 1)
v <- create_fmalloc_vector("double", N, heap = h, init = FALSE)
v[c(1, N)] <- c(1.5, 2.5)
fmalloc_save(v, "big", h)
rm(v)
fmalloc_close(h)
rm(h)
invisible(gc())
has_ff <- requireNamespace("ff", quietly = TRUE)
fff <- NULL
if (has_ff) {
  fff <- tempfile("cat-ff-", dir, fileext = ".ff")
  x <- ff::ff(vmode = "double", length = N, filename = fff, finalizer = "close")
  x[1] <- 1.5
  close(x)
  ffrds <- paste0(fff, ".rds")
  saveRDS(x, ffrds)
  rm(x)
}
# Every file each open reads starts cold: the heap file (header, catalog and
# data are all inside it), and for ff both its data file and the .rds file
# that readRDS() reads to rebuild the ff object (ff's catalog, kept beside
# its data).
cold_files <- c(big, fff, if (has_ff) ffrds)
drop_caches <- function(files) {
  # Evict the files' pages (POSIX_FADV_DONTNEED through dd), so that each
  # run starts cold; falls back to warm when dd cannot.
  for (f in files) {
    system2("dd", c(paste0("if=", f), "iflag=nocache", "count=0"), stdout = FALSE, stderr = FALSE)
    system2("dd", c(paste0("of=", f), "oflag=nocache", "conv=notrunc,fdatasync", "count=0"),
            stdout = FALSE, stderr = FALSE)
  }
}
cold <- function(which) {
  callr::r(function(which, big, fff) {
    t <- function() as.numeric(Sys.time()) * 1000
    t0 <- t()
    if (which == "rfmalloc") {
      suppressPackageStartupMessages(library(Rfmalloc))
      t1 <- t()
      h <- fmalloc_open(big, readonly = TRUE)
      t2 <- t()
      x <- fmalloc_get("big", h)
      t3 <- t()
      first <- x[1]
      t4 <- t()
    } else {
      suppressPackageStartupMessages(library(ff))
      t1 <- t()
      x <- readRDS(paste0(fff, ".rds"))
      open(x, readonly = TRUE)
      t2 <- t()
      t3 <- t2
      first <- x[1]
      t4 <- t()
    }
    c(library = t1 - t0, open = t2 - t1, get = t3 - t2, first = t4 - t3, total = t4 - t0,
      after_library = t4 - t1)
  }, args = list(which = which, big = big, fff = fff), libpath = .libPaths())
}
res <- list()
n_cold <- if (cold_only) reps else 7L
for (k in seq_len(n_cold)) {
  drop_caches(cold_files)
  res$rfmalloc <- rbind(res$rfmalloc, cold("rfmalloc"))
  if (has_ff) {
    drop_caches(cold_files)
    res$ff <- rbind(res$ff, cold("ff"))
  }
}
cat(sprintf("\nCold reopen of a 1e8-double vector in a new process (ms, medians of %d):\n", n_cold))
for (nm in names(res)) {
  m <- apply(res[[nm]], 2, stats::median)
  cat(sprintf("  %-9s library %6.1f  open %6.1f  get %6.1f  first element %6.1f  | total %6.1f, after library %6.1f\n",
              nm, m[["library"]], m[["open"]], m[["get"]], m[["first"]], m[["total"]], m[["after_library"]]))
}
if (!has_ff) cat("  ff is not installed: no comparison\n")
unlink(c(big, fff, if (!is.null(fff)) paste0(fff, ".rds")))
