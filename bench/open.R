# Benchmark: how long opening big heaps and getting big named vectors take.
#
#   Rscript bench/open.R [dir]      (default dir: tempdir(); needs ~10 GiB free)
#
# The tests check what these operations do (a 50 GB heap is a sparse file, a
# named 8 GB vector is mapped, not read); how long they take depends on the
# machine, so it is measured here instead. The targets are those the tests
# used to assert: creating a 50 GB heap in < 10 s (the core alone, with one
# 1 MiB object named and synced, in < 2 s), getting an 8 GB named vector in a
# new session in < 0.5 s.
# Not a test: timings depend on the machine.

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) >= 1) args[[1]] else tempdir()

row <- function(what, seconds, target) {
  cat(sprintf("%-55s %8.3f s   (target < %g s)\n", what, seconds, target))
}

# 1. init_fmalloc() of a 50 GB heap (the seed README's example).
huge <- tempfile("bench-huge-", dir, fileext = ".bin")
row("init_fmalloc(size_gb = 50)",
    system.time(init_fmalloc(huge, size_gb = 50))[["elapsed"]], 10)
cleanup_fmalloc()
invisible(gc())
row("reopen the 50 GB heap",
    system.time(h <- fmalloc_open(huge))[["elapsed"]], 2)
fmalloc_close(h)
unlink(huge)

# 2. fmalloc_get() of an 8 GB named vector in a new session.
big <- tempfile("bench-big-", dir, fileext = ".bin")
n <- 1e9
heap <- fmalloc_open(big, size_gb = 9)
v <- create_fmalloc_vector("double", n, heap = heap, init = FALSE)
v[c(1, n)] <- c(1.5, 2.5)
fmalloc_save(v, "big", heap)
rm(v)
fmalloc_close(heap)
invisible(gc())
seconds <- callr::r(function(path) {
  library(Rfmalloc)
  heap <- fmalloc_open(path)
  system.time(fmalloc_get("big", heap))[["elapsed"]]
}, args = list(path = big), libpath = .libPaths())
row("fmalloc_get() of 8 GB in a new session", seconds, 0.5)
unlink(big)
