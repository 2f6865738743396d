# Benchmark: the side-by-side vector table (README "Performance").
#
#   Rscript bench/table.R [N] [chunk]     (default N = 1e8 doubles = 800 MB)
#
# One double vector of N elements, kept on disk by each system:
#   base R     numeric(N) in memory; saveRDS(compress = FALSE) / readRDS()
#   bigmemory  filebacked.big.matrix(N, 1) (Debian r-cran-bigmemory)
#   ff         ff(vmode = "double", length = N) (Debian r-cran-ff)
#   Rfmalloc   create_fmalloc_vector("double", N, name =), method "altrep"
#              and "classic"; reopened with fmalloc_open() + fmalloc_get()
# A system whose package is not installed is skipped with a message.
#
# Each system runs in a new R process (callr), so that its peak resident
# memory is its own: create + fill with the plain chunked loop
# `x[i:j] <- values` (no gc() calls), made durable (saveRDS / flush /
# fmalloc_sync), sum(), a 1e6-element random gather x[idx], a loop of 1e5
# scalar reads x[i]; peak RssAnon / RssFile during the fill. Then reopen +
# sum() in a new process with the files' pages in the page cache ("warm")
# and after dropping them (`dd iflag=nocache count=0`, "cold"). Times are
# elapsed seconds (CPU seconds in brackets for create + fill), median of
# `reps` (env RFMALLOC_BENCH_REPS, default 1) runs. bigmemory and ff read
# the whole vector into memory for sum() (x[]), their usual idiom. The
# files go to RFMALLOC_BENCH_DIR (default tempdir()) and are deleted. With
# RFMALLOC_BENCH_SAVE=path the table is also written there (README.Rmd
# shows vignettes/bench-table.md). Not a test: the numbers depend on the
# machine and its load (printed).

args <- commandArgs(trailingOnly = TRUE)
N <- if (length(args) >= 1) as.numeric(args[[1]]) else 1e8
chunk <- if (length(args) >= 2) as.numeric(args[[2]]) else 1e7
dir <- Sys.getenv("RFMALLOC_BENCH_DIR", tempdir())
reps <- as.integer(Sys.getenv("RFMALLOC_BENCH_REPS", "1"))

systems <- c("base R", "bigmemory", "ff", "Rfmalloc altrep", "Rfmalloc classic")
needs <- c("base R" = "base", bigmemory = "bigmemory", ff = "ff",
           "Rfmalloc altrep" = "Rfmalloc", "Rfmalloc classic" = "Rfmalloc")
have <- vapply(needs, function(p) p == "base" || requireNamespace(p, quietly = TRUE), TRUE)
for (s in systems[!have]) {
  message(sprintf("%s skipped: package '%s' is not installed (Debian: apt-get install r-cran-%s)",
                  s, needs[[s]], needs[[s]]))
}
if (have[["Rfmalloc classic"]] && !Rfmalloc::fmalloc_has_classic()) {
  message("Rfmalloc classic skipped: this build has no classic path")
  have[["Rfmalloc classic"]] <- FALSE
}
systems <- systems[have[systems]]

# Everything below runs in the child processes.
child <- function(sys, phase, N, chunk, dir, seed) {
  status <- function() {
    s <- readLines("/proc/self/status")
    kb <- function(key) {
      as.numeric(sub("^\\S+:\\s+(\\d+) kB$", "\\1", grep(paste0("^", key, ":"), s, value = TRUE)))
    }
    c(anon = kb("RssAnon"), file = kb("RssFile")) * 1024
  }
  cpu <- function() sum(proc.time()[c("user.self", "sys.self")])
  heap <- file.path(dir, "x.heap")
  rds <- file.path(dir, "x.rds")
  if (sys %in% c("Rfmalloc altrep", "Rfmalloc classic")) {
    suppressPackageStartupMessages(library(Rfmalloc))
  }
  if (sys == "bigmemory") suppressPackageStartupMessages(library(bigmemory))
  if (sys == "ff") suppressPackageStartupMessages(library(ff))
  make <- function() {
    switch(sys,
      "base R" = numeric(N),
      bigmemory = filebacked.big.matrix(N, 1, type = "double", backingfile = "x.bin",
                                        descriptorfile = "x.desc", backingpath = dir),
      ff = ff(vmode = "double", length = N, filename = file.path(dir, "x.ff"),
              finalizer = "close"),
      "Rfmalloc altrep" = ,
      "Rfmalloc classic" = {
        init_fmalloc(heap, size_gb = N * 8 / 2^30 + 0.5)
        create_fmalloc_vector("double", N, name = "x",
                              method = if (sys == "Rfmalloc altrep") "altrep" else "classic")
      }
    )
  }
  persist <- function(x) {
    switch(sys,
      "base R" = saveRDS(x, rds, compress = FALSE),
      bigmemory = flush(x),
      ff = { close(x); open(x); saveRDS(x, file.path(dir, "x.ffrds")) }, # close() flushes
      fmalloc_sync()
    )
  }
  reopen <- function() {
    switch(sys,
      "base R" = readRDS(rds),
      bigmemory = attach.big.matrix(file.path(dir, "x.desc")),
      ff = { y <- readRDS(file.path(dir, "x.ffrds")); open(y, readonly = TRUE); y },
      fmalloc_get("x", fmalloc_open(heap, readonly = TRUE))
    )
  }
  total <- function(x) if (sys %in% c("bigmemory", "ff")) sum(x[]) else sum(x)
  if (phase == "reopen") {
    t <- system.time({ x <- reopen(); s <- total(x) })[["elapsed"]]
    return(list(reopen = t, ok = isTRUE(all.equal(s, 0.5 * N * (N + 1) / 2)),
                anon = status()[["anon"]]))
  }
  set.seed(seed)
  idx <- sample.int(N, 1e6)
  loop_idx <- sample.int(N, 1e5)
  read1 <- if (sys == "bigmemory") function(x, i) x[i, 1] else function(x, i) x[i]
  gc()
  peak <- status()
  c0 <- cpu()
  t_fill <- system.time({
    x <- make()
    if (sys == "bigmemory") {
      for (s in seq(1, N, by = chunk)) {
        e <- min(s + chunk - 1, N)
        x[s:e, 1] <- (s:e) * 0.5
        peak <- pmax(peak, status())
      }
    } else {
      for (s in seq(1, N, by = chunk)) {
        e <- min(s + chunk - 1, N)
        x[s:e] <- (s:e) * 0.5
        peak <- pmax(peak, status())
      }
    }
    persist(x)
  })[["elapsed"]]
  cpu_fill <- cpu() - c0
  t_sum <- system.time(s <- total(x))[["elapsed"]]
  t_gather <- system.time(if (sys == "bigmemory") x[idx, 1] else x[idx])[["elapsed"]]
  t_scalar <- system.time({
    v <- 0
    for (i in loop_idx) v <- v + read1(x, i)
  })[["elapsed"]]
  list(fill = t_fill, cpu_fill = cpu_fill, sum = t_sum, gather = t_gather, scalar = t_scalar,
       peak_anon = peak[["anon"]], peak_file = peak[["file"]],
       ok = isTRUE(all.equal(s, 0.5 * N * (N + 1) / 2)))
}

run_system <- function(sys, rep) {
  d <- file.path(dir, sprintf("rfmalloc-table-%d-%d", Sys.getpid(), rep))
  dir.create(d)
  on.exit(unlink(d, recursive = TRUE))
  a <- callr::r(child, list(sys, "fill", N, chunk, d, rep))
  warm <- callr::r(child, list(sys, "reopen", N, chunk, d, rep))
  for (f in list.files(d, full.names = TRUE)) {
    system2("dd", c(paste0("if=", f), "iflag=nocache", "count=0"), stdout = FALSE, stderr = FALSE)
  }
  cold <- callr::r(child, list(sys, "reopen", N, chunk, d, rep))
  c(unlist(a), warm = warm$reopen, cold = cold$reopen, reopen_anon = cold$anon,
    ok_all = a$ok && warm$ok && cold$ok)
}

load0 <- readLines("/proc/loadavg")
res <- lapply(setNames(systems, systems), function(s) {
  runs <- lapply(seq_len(reps), function(r) run_system(s, r))
  apply(do.call(rbind, runs), 2, median)
})
load1 <- readLines("/proc/loadavg")

mem <- as.numeric(sub("\\D+(\\d+).*", "\\1", grep("^MemTotal", readLines("/proc/meminfo"),
                                                    value = TRUE))) / 2^20
os <- sub('^PRETTY_NAME="?([^"]*)"?$', "\\1",
          grep("^PRETTY_NAME=", readLines("/etc/os-release"), value = TRUE))
tab <- data.frame(
  system = names(res),
  "create+fill+save" = sprintf("%.2f (%.2f cpu)", sapply(res, `[[`, "fill"), sapply(res, `[[`, "cpu_fill")),
  "sum" = sprintf("%.3f", sapply(res, `[[`, "sum")),
  "gather 1e6" = sprintf("%.3f", sapply(res, `[[`, "gather")),
  "scalar 1e5" = sprintf("%.3f", sapply(res, `[[`, "scalar")),
  "reopen+sum warm" = sprintf("%.2f", sapply(res, `[[`, "warm")),
  "reopen+sum cold" = sprintf("%.2f", sapply(res, `[[`, "cold")),
  "peak anon MB" = sprintf("%.0f", sapply(res, `[[`, "peak_anon") / 1e6),
  "peak file MB" = sprintf("%.0f", sapply(res, `[[`, "peak_file") / 1e6),
  "values" = ifelse(sapply(res, `[[`, "ok_all") == 1, "ok", "WRONG"),
  check.names = FALSE, row.names = NULL
)
out <- c(
  sprintf("N = %.0f doubles (%.0f MB), fill in chunks of %.0f; %s; %s, %d cores, %.0f GiB RAM; R %s.",
          N, N * 8 / 1e6, chunk, format(Sys.time(), "%Y-%m-%d %H:%M %Z"), os,
          parallel::detectCores(), mem, getRversion()),
  sprintf("Load average before %s, after %s (other jobs shared the machine). Elapsed seconds, median of %d run(s).",
          paste(strsplit(load0, " ")[[1]][1:3], collapse = " "),
          paste(strsplit(load1, " ")[[1]][1:3], collapse = " "), reps),
  "",
  knitr::kable(tab, align = c("l", rep("r", ncol(tab) - 1)))
)
cat(out, sep = "\n")
save_to <- Sys.getenv("RFMALLOC_BENCH_SAVE")
if (nzchar(save_to)) writeLines(out, save_to)
