# Benchmark: fmalloc_save() of a vector that is not in the heap (a copy),
# with and without the progress display of interactive sessions.
#
#   R --interactive --quiet --no-save < bench/save-copy.R
#   R --quiet --no-save < bench/save-copy.R
#
# (interactive() must be TRUE for the progress path, hence stdin instead of
# Rscript). In an interactive session the copy runs in 1 GiB chunks with a
# clock check between them; it must be as fast as the one-piece copy of a
# non-interactive session. Needs about 2 x 2.4 GB of memory.
# Not a test: timings depend on the machine.

suppressPackageStartupMessages(library(Rfmalloc))
heap <- fmalloc_open(tempfile(fileext = ".bin"), size_gb = 3)
v <- as.double(seq_len(3e8)) # 2.4 GB
time_saves <- function(progress) {
  options(fmalloc.progress = progress)
  vapply(1:5, function(i) {
    s <- system.time(x <- fmalloc_save(v, "x", heap, overwrite = TRUE))[["elapsed"]]
    rm(x)
    invisible(gc())
    s
  }, 0)
}
# Progress shown (interactive) or not: a progress line on stderr, then the
# totals.
shown <- time_saves(TRUE)
plain <- time_saves(FALSE)
cat(sprintf("\ninteractive: %s\n", interactive()))
cat(sprintf("%-40s median %6.2f s  (all: %s)\n", "save 2.4 GB, progress enabled",
            median(shown), paste(sprintf("%.2f", shown), collapse = " ")))
cat(sprintf("%-40s median %6.2f s  (all: %s)\n", "save 2.4 GB, progress off",
            median(plain), paste(sprintf("%.2f", plain), collapse = " ")))
fmalloc_close(heap)
