# Benchmark: fmalloc_write() -- a chunked fill of a named vector (one copy
# per run of positions), scattered positions, and the cost of one call.
#
#   Rscript bench/write.R [n] [chunk]   (defaults: 5e7 doubles, chunks of 5e6)
#
# Compared with R's own `x[i] <- v` on an ordinary vector of the same size
# and with memcpy speed (copying the chunk with `y[] <- v`). Not a test:
# timings depend on the machine.

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
n <- if (length(args) >= 1) as.numeric(args[[1]]) else 5e7
chunk <- if (length(args) >= 2) as.numeric(args[[2]]) else 5e6

path <- tempfile(fileext = ".bin")
heap <- fmalloc_open(path, size_gb = 1.25 * n * 8 / 2^30)
invisible(create_fmalloc_vector("double", n, heap = heap, name = "x"))
v <- runif(chunk)
starts <- seq(1, n, by = chunk)

row <- function(what, seconds, bytes = NA) {
  cat(sprintf("%-50s %9.4g s%s\n", what, seconds,
              if (is.na(bytes)) "" else sprintf("   %7.0f MB/s", bytes / 2^20 / seconds)))
}

fill <- function() {
  for (from in starts) fmalloc_write(heap, "x", from:(from + chunk - 1), v)
}
row("fmalloc_write() chunked fill, first (page faults)", system.time(fill())[["elapsed"]], n * 8)
row("fmalloc_write() chunked fill, again", system.time(fill())[["elapsed"]], n * 8)

y <- double(n)
row("R: y[from:to] <- v on an ordinary vector",
    system.time(for (from in starts) y[from:(from + chunk - 1)] <- v)[["elapsed"]], n * 8)
z <- double(chunk)
row("R: z[] <- v (copy of one chunk) x chunks",
    system.time(for (from in starts) z[] <- v)[["elapsed"]], n * 8)
rm(y, z)

idx <- sample.int(n, chunk)
row(sprintf("fmalloc_write() %g scattered positions", chunk),
    system.time(fmalloc_write(heap, "x", idx, v))[["elapsed"]])

k <- 1000
row(sprintf("one fmalloc_write() of one element (mean of %d)", k),
    system.time(for (j in seq_len(k)) fmalloc_write(heap, "x", j, 1))[["elapsed"]] / k)

fmalloc_close(heap)
invisible(gc())
unlink(path)
