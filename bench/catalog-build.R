# Benchmark: building n named objects (issue 8, the write side), against a
# directory of .rds files: the "build" column of bench/catalog.R, repeated
# (each run in a new R process) and with its growth over the build:
#
#   Rscript bench/catalog-build.R [sizes] [reps] [dir] [stores]
#     sizes:  comma-separated numbers of objects (default 10000,100000)
#     reps:   runs per store and size, each in a new R process (default 3);
#             medians are shown
#     dir:    where the files go (default tempdir())
#     stores: comma-separated, of rds,batched,unsynced,durable (default all;
#             durable, flush-bound and slow on a busy disk, only n <= 10 000)
#
# Objects are double(100), named sprintf("obj%06d", i). Stores:
#   batched   fmalloc_batch(heap, for (i in 1:n) fmalloc_save(obj, name, heap))
#   unsynced  fmalloc_open(sync = "none"), one fmalloc_save() after the
#             other, then fmalloc_sync()
#   durable   sync = "commit", one durable commit per save (only n <= 10 000)
#   rds       saveRDS(obj, file.path(dir, paste0(name, ".rds"))) per object
# Columns: seconds for all n; microseconds per object; the ratio to rds in
# the same run; "growth": the time per object of the last tenth of the
# objects over that of the first tenth (1 when a save costs the same
# whatever the number of objects already saved). The load average is printed
# with every row: the machine may be shared, compare within one run.
# Not a test: timings depend on the machine.

args <- commandArgs(trailingOnly = TRUE)
sizes <- if (length(args) >= 1) as.numeric(strsplit(args[[1]], ",")[[1]]) else c(1e4, 1e5)
reps <- if (length(args) >= 2) as.integer(args[[2]]) else 3L
dir <- if (length(args) >= 3) args[[3]] else tempdir()
wanted <- if (length(args) >= 4) strsplit(args[[4]], ",")[[1]] else
  c("rds", "batched", "unsynced", "durable")

# One build in a new R process: total seconds and the seconds of each tenth.
build_once <- function(store, n, dir) {
  callr::r(function(store, n, dir) {
    suppressPackageStartupMessages(library(Rfmalloc))
    obj <- double(100)
    marks <- unique(round(seq(0, n, length.out = 11)))
    at <- numeric(length(marks))
    k <- 1L
    now <- function() as.numeric(Sys.time())
    tick <- function(i) {
      if (i == marks[[k + 1L]]) {
        k <<- k + 1L
        at[[k]] <<- now()
      }
    }
    if (store == "rds") {
      d <- tempfile("build-rds-", dir)
      dir.create(d)
      at[[1]] <- now()
      for (i in seq_len(n)) {
        saveRDS(obj, file.path(d, paste0(sprintf("obj%06d", i), ".rds")))
        tick(i)
      }
      total <- now() - at[[1]]
      unlink(d, recursive = TRUE)
    } else {
      path <- tempfile("build-", dir, fileext = ".bin")
      heap <- fmalloc_open(path, size_gb = 0.25,
                           sync = if (store == "unsynced") "none" else "commit")
      at[[1]] <- now()
      if (store == "batched") {
        fmalloc_batch(heap, for (i in seq_len(n)) {
          fmalloc_save(obj, sprintf("obj%06d", i), heap)
          tick(i)
        })
      } else {
        for (i in seq_len(n)) {
          fmalloc_save(obj, sprintf("obj%06d", i), heap)
          tick(i)
        }
        if (store == "unsynced") fmalloc_sync(heap)
      }
      total <- now() - at[[1]]
      stopifnot(nrow(fmalloc_ls(heap)) == n)
      fmalloc_close(heap)
      unlink(path)
    }
    tenth <- diff(at)
    c(total = total, growth = tenth[[length(tenth)]] / tenth[[1]])
  }, args = list(store = store, n = n, dir = dir), libpath = .libPaths())
}

load_avg <- function() {
  la <- tryCatch(readLines("/proc/loadavg", n = 1L), error = function(e) NA_character_)
  if (is.na(la)) "?" else paste(strsplit(la, " ")[[1]][1:3], collapse = " ")
}

rows <- list()
for (n in sizes) {
  stores <- intersect(c("rds", "batched", "unsynced", if (n <= 10000) "durable"), wanted)
  res <- list()
  for (r in seq_len(reps)) {
    for (store in stores) { # interleaved: load changes hit every store alike
      res[[store]] <- rbind(res[[store]], build_once(store, n, dir))
    }
  }
  rds <- if (is.null(res$rds)) NA_real_ else stats::median(res$rds[, "total"])
  for (store in stores) {
    total <- stats::median(res[[store]][, "total"])
    rows[[length(rows) + 1L]] <- data.frame(
      n = n, store = store, seconds = round(total, 2),
      us_per_object = round(total / n * 1e6),
      vs_rds = round(total / rds, 2),
      growth = round(stats::median(res[[store]][, "growth"]), 2),
      load = load_avg()
    )
    print(rows[[length(rows)]], row.names = FALSE)
  }
}
tab <- do.call(rbind, rows)
cat(sprintf("\n%s, R %s, medians of %d runs (one new R process each)\n\n",
            format(Sys.time(), "%Y-%m-%d %H:%M UTC", tz = "UTC"), getRversion(), reps))
cat("| n | store | build (s) | us/object | x rds | growth | load |\n")
cat("|--:|---|--:|--:|--:|--:|---|\n")
for (i in seq_len(nrow(tab))) {
  r <- tab[i, ]
  cat(sprintf("| %s | %s | %.2f | %d | %.2f | %.2f | %s |\n",
              format(r$n, big.mark = " ", scientific = FALSE), r$store, r$seconds,
              as.integer(r$us_per_object), r$vs_rds, r$growth, r$load))
}
