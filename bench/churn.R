# Benchmark: small-vector churn, fmalloc vectors against double(k).
#
#   Rscript bench/churn.R [n] [reps]     (defaults: 200000 vectors, 7 rounds)
#
# n vectors of 2 to 512 doubles (16 B - 4 KiB), kept in a list, for an
# ordinary vector (`double(k)`) and both fmalloc methods, in the same
# process, interleaved round by round (ordinary, altrep, classic, again) so
# that load from other processes hits all three alike:
#   alloc        create the n vectors in a fresh heap
#   drop + gc    rm() the list and gc(): R collects them (for fmalloc
#                vectors: collecting them frees their blocks)
#   refill       create n vectors again (recycled space)
#   drop again   rm() + gc() once more
# Each phase is timed in CPU seconds (user + system; elapsed in brackets):
# the median over the rounds, and its ratio to double(k) (target of issue 7:
# drop + gc and refill within 1.2x). gc() runs before every phase, so that
# R's own garbage from earlier phases is not counted in them.
# Not a test: timings depend on the machine and its load (printed).

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
n <- if (length(args) >= 1) as.integer(args[[1]]) else 200000L
reps <- if (length(args) >= 2) as.integer(args[[2]]) else 7L
set.seed(1)
k <- sample(2:512, n, replace = TRUE)

methods <- c("ordinary", if (fmalloc_has_classic()) c("altrep", "classic") else "altrep")
make <- list(
  ordinary = function(k) double(k),
  altrep = function(k) create_fmalloc_vector("double", k),
  classic = function(k) create_fmalloc_vector("double", k, method = "classic")
)
fill <- function(mk) {
  out <- vector("list", length(k))
  for (i in seq_along(k)) out[[i]] <- mk(k[i])
  out
}
phases <- c("alloc", "drop + gc", "refill", "drop again")
targets <- c(NA, 1.2, 1.2, 1.2)

# Elapsed and CPU seconds of f().
clock <- function(f) {
  t <- system.time(f(), gcFirst = TRUE)
  c(elapsed = t[["elapsed"]], cpu = t[["user.self"]] + t[["sys.self"]])
}

times <- array(NA_real_, c(length(phases), length(methods), reps, 2),
               list(phases, methods, NULL, c("elapsed", "cpu")))
# One heap per method and round: every round starts from fresh space.
dir <- tempfile("churn-")
dir.create(dir)
load0 <- readLines("/proc/loadavg")
for (r in seq_len(reps)) {
  for (m in methods) {
    path <- file.path(dir, sprintf("%s-%d.bin", m, r))
    if (m != "ordinary") invisible(init_fmalloc(path, size_gb = 0.5))
    mk <- make[[m]]
    v <- NULL
    times[1, m, r, ] <- clock(function() v <<- fill(mk))
    times[2, m, r, ] <- clock(function() { v <<- NULL; gc() })
    times[3, m, r, ] <- clock(function() v <<- fill(mk))
    times[4, m, r, ] <- clock(function() { v <<- NULL; gc() })
    if (m != "ordinary") {
      cleanup_fmalloc()
      invisible(gc())
      unlink(path)
    }
  }
}
unlink(dir, recursive = TRUE)

med <- apply(times, c(1, 2, 4), median)
cat(sprintf("%d vectors of 2-512 doubles (16 B - 4 KiB); median of %d interleaved rounds\n",
            n, reps))
cat(sprintf("%s; %d cores; load average at start %s, now %s\n",
            format(Sys.time(), "%Y-%m-%d %H:%M %Z"), parallel::detectCores(),
            paste(strsplit(load0, " ")[[1]][1:3], collapse = " "),
            paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = " ")))
cat("CPU seconds (elapsed in brackets); ratio = CPU / CPU of double(k)\n\n")
cat(sprintf("%-11s %-16s", "phase", "double(k)"))
for (m in methods[-1]) cat(sprintf(" %-16s %5s", m, "ratio"))
cat(sprintf("  %6s\n", "target"))
for (p in phases) {
  cat(sprintf("%-11s %6.3f (%6.3f)", p, med[p, "ordinary", "cpu"], med[p, "ordinary", "elapsed"]))
  for (m in methods[-1]) {
    cat(sprintf(" %6.3f (%6.3f) %5.2f", med[p, m, "cpu"], med[p, m, "elapsed"],
                med[p, m, "cpu"] / med[p, "ordinary", "cpu"]))
  }
  t <- targets[match(p, phases)]
  cat(sprintf("  %6s\n", if (is.na(t)) "" else sprintf("%.1f", t)))
}
