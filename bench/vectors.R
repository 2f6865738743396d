# Benchmark: fmalloc vectors (ALTREP and classic) against ordinary R vectors.
#
#   Rscript bench/vectors.R [N] [reps]     (default N = 1e8 doubles = 800 MB)
#
# Every operation runs on an ordinary vector and on fmalloc vectors of both
# methods in the same process, interleaved (ordinary, altrep, classic, then
# again) so that load from other processes hits all three alike. The table
# shows the median over `reps` rounds of the elapsed time and of the CPU
# time (user + system) and their ratios to the ordinary vector, next to the
# targets of issue 3. On a busy machine the CPU-time ratio is the more
# reliable one. It also reports how much R's anonymous memory (RssAnon)
# grew by creating and filling each vector: for fmalloc vectors the data
# are in file pages, so it should stay far below the vector's size.
# Not a test: timings depend on the machine.

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
N <- if (length(args) >= 1) as.numeric(args[[1]]) else 1e8
reps <- if (length(args) >= 2) as.integer(args[[2]]) else 5L
chunk <- 1e6
set.seed(1)

rss_anon <- function() {
  s <- readLines("/proc/self/status")
  kb <- as.numeric(sub("^RssAnon:\\s+(\\d+) kB$", "\\1", grep("^RssAnon:", s, value = TRUE)))
  kb * 1024
}

# Elapsed and CPU seconds of f().
clock <- function(f) {
  gc()
  t <- system.time(f())
  c(elapsed = t[["elapsed"]], cpu = t[["user.self"]] + t[["sys.self"]])
}

heap_file <- tempfile("bench-", fileext = ".bin")
invisible(init_fmalloc(heap_file, size_gb = 2 * N * 8 / 2^30 + 1))

methods <- c("ordinary", "altrep", "classic")
make <- list(
  ordinary = function(n) numeric(n),
  altrep = function(n) create_fmalloc_vector("double", n),
  classic = function(n) create_fmalloc_vector("double", n, method = "classic")
)

# Create and fill in chunks, so that the values written never need a second
# N-sized vector (the anonymous-memory measurement must see the vector
# alone). The vector is modified in the function that created it: R copies
# a vector modified through a function argument (shared), fmalloc or not.
fill_values <- as.double(seq_len(chunk))
create_filled <- function(mk) {
  x <- mk(N)
  for (s in seq(1, N, by = chunk)) {
    e <- min(s + chunk - 1, N)
    x[s:e] <- if (e - s + 1 == chunk) fill_values else fill_values[seq_len(e - s + 1)]
  }
  x
}

gather_idx <- sample.int(N, 1e6)
loop_idx <- seq_len(1e6)
scalar_loop <- compiler::cmpfun(function(x, idx) {
  s <- 0
  for (i in idx) s <- s + x[i]
  s
})
k <- sample(2:512, 2e5, replace = TRUE) # 16 B - 4 KiB of doubles
make_small <- list(
  ordinary = function(k) double(k),
  altrep = function(k) create_fmalloc_vector("double", k),
  classic = function(k) create_fmalloc_vector("double", k, method = "classic")
)
small_vectors <- function(method) {
  mk <- make_small[[method]]
  out <- vector("list", length(k))
  for (i in seq_along(k)) out[[i]] <- mk(k[i])
  out
}

ops <- c("create + fill", "sum()", "1e6 random gather", "scalar x[i] loop (1e6)",
         "200k small vectors")
targets <- c(1.2, 1.1, 1.2, 1.5, 2)
times <- array(NA_real_, c(length(ops), length(methods), reps, 2),
               list(ops, methods, NULL, c("elapsed", "cpu")))
anon <- setNames(numeric(length(methods)), methods)
checksum <- list()

for (r in seq_len(reps)) {
  for (m in methods) {
    gc()
    a0 <- rss_anon()
    times[1, m, r, ] <- clock(function() x <<- create_filled(make[[m]]))
    if (r == 1L) {
      gc() # the fill loop's garbage (index vectors) is not the vector
      anon[[m]] <- rss_anon() - a0
    }
    stopifnot(m == "ordinary" || is_fmalloc(x))
    times[2, m, r, ] <- clock(function() checksum[[m]] <<- sum(x))
    times[3, m, r, ] <- clock(function() x[gather_idx])
    times[4, m, r, ] <- clock(function() scalar_loop(x, loop_idx))
    stopifnot(m == "ordinary" || is_fmalloc(x))
    rm(x)
    gc()
    times[5, m, r, ] <- clock(function() { v <- small_vectors(m); rm(v) })
  }
}
stopifnot(length(unique(unlist(checksum))) == 1L)

med <- apply(times, c(1, 2, 4), median)
cat(sprintf("N = %.0f doubles (%.0f MB); median of %d interleaved rounds; heap file in %s\n\n",
            N, N * 8 / 1e6, reps, dirname(heap_file)))
cat(sprintf("%-24s %-8s %9s %9s %6s   %9s %9s %6s  %6s %3s\n", "operation", "method",
            "ordinary", "fmalloc", "ratio", "ord. cpu", "fm. cpu", "ratio", "target", "ok"))
for (i in seq_along(ops)) {
  for (m in c("altrep", "classic")) {
    re <- med[i, m, "elapsed"] / med[i, "ordinary", "elapsed"]
    rc <- med[i, m, "cpu"] / med[i, "ordinary", "cpu"]
    cat(sprintf("%-24s %-8s %8.3fs %8.3fs %6.2f   %8.3fs %8.3fs %6.2f  %6.1f %3s\n",
                ops[i], m, med[i, "ordinary", "elapsed"], med[i, m, "elapsed"], re,
                med[i, "ordinary", "cpu"], med[i, m, "cpu"], rc, targets[i],
                if (rc <= targets[i]) "yes" else "NO"))
  }
}
cat("\nGrowth of R's anonymous memory (RssAnon) by create + fill, after gc():\n")
for (m in methods) {
  cat(sprintf("  %-8s %8.1f MB  (the vector: %.0f MB)\n", m, anon[[m]] / 1e6, N * 8 / 1e6))
}

cleanup_fmalloc()
invisible(gc())
unlink(heap_file)
