# Benchmark: a vector larger than memory, against the disk's own bandwidth.
#
#   Rscript bench/out-of-core.R [N] [ways] [chunk] [method]
#     N       doubles (default 4e9 = 32 GB)
#     ways    "loop", "write" or "loop,write" (default: both)
#     chunk   elements written per loop iteration (default 1e6 = 8 MB)
#     method  "altrep" or "classic" (default: altrep)
#
# Environment: RFMALLOC_BENCH_DIR chooses the directory of the heap file and
# of dd's test file (default: tempdir()).
#
# In one run: dd's sequential write and read bandwidth with O_DIRECT (a
# file of min(4 GiB, N * 8 bytes), written, read, deleted); then for each
# way of filling, in a new R process, `create_fmalloc_vector("double", N,
# name = "x")` and a chunked fill with no gc() call, either
#   loop:  the plain loop `x[i:j] <- values`, or
#   write: the documented chunked write `fmalloc_write(NULL, "x", i:j,
#          values)`,
# sampling R's anonymous and file-backed resident memory (RssAnon,
# RssFile) at every chunk, then fmalloc_sync(); then, in another new process
# with the file's pages dropped from the page cache (`dd iflag=nocache
# count=0`), reopen and sum(). Each heap file is deleted when its way is
# done. The values of a chunk are `(i:j) * 0.5`, computed by R in both ways
# (their CPU time is part of the fill, as in real use).
#
# The chunk: R allocates each chunk's values anew, and glibc's malloc gives
# an allocation above 32 MiB fresh pages from the kernel every time (a page
# fault per 4 KiB: 1e7 doubles, 80 MB, cost R 2.9 s of CPU per GB before
# anything was written, 1e6 doubles 0.75 s). Chunks of about 1e6 elements
# are the ones to use.
#
# Not a test: the numbers depend on the disk and on whatever else runs (the
# load average is printed). Needs free disk space for the vector plus 10 %;
# skips with a message when there is less. The README's numbers: `Rscript
# bench/out-of-core.R | tee bench/results/out-of-core.txt`.

suppressPackageStartupMessages(library(Rfmalloc))

args <- commandArgs(trailingOnly = TRUE)
N <- if (length(args) >= 1) as.numeric(args[[1]]) else 4e9
ways <- if (length(args) >= 2) strsplit(args[[2]], ",")[[1]] else c("loop", "write")
chunk <- if (length(args) >= 3) as.numeric(args[[3]]) else 1e6
method <- if (length(args) >= 4) args[[4]] else "altrep"
stopifnot(all(ways %in% c("loop", "write")), method %in% c("altrep", "classic"))
dir <- Sys.getenv("RFMALLOC_BENCH_DIR", tempdir())
bytes <- N * 8

free_bytes <- function(path) {
  out <- system2("df", c("-B1", "--output=avail", shQuote(path)), stdout = TRUE)
  as.numeric(out[[length(out)]])
}
if (!nzchar(Sys.which("dd")) || !file.exists("/proc/self/status")) {
  message("out-of-core benchmark skipped: needs dd and /proc (Linux)")
  quit(save = "no")
}
need <- bytes * 1.1
avail <- free_bytes(dir)
if (avail < need) {
  message(sprintf("out-of-core benchmark skipped: %.1f GB free in %s, %.1f GB needed",
                  avail / 1e9, dir, need / 1e9))
  quit(save = "no")
}

# dd's bandwidth (bytes/s) from its last line ("..., 12.3 s, 1.2 GB/s").
dd <- function(...) {
  out <- suppressWarnings(system2("dd", c(...), stdout = TRUE, stderr = TRUE))
  line <- grep("copied", out, value = TRUE)
  secs <- as.numeric(sub(".*copied, ([0-9.e+-]+) s.*", "\\1", line))
  b <- as.numeric(sub("^([0-9]+) bytes.*", "\\1", line))
  b / secs
}
dd_file <- file.path(dir, sprintf("rfmalloc-dd-%d.bin", Sys.getpid()))
dd_count <- max(1, floor(min(4 * 2^30, bytes) / 2^24))
dd_write <- dd("if=/dev/zero", paste0("of=", dd_file), "bs=16M",
               paste0("count=", dd_count), "oflag=direct", "conv=fsync")
dd_read <- dd(paste0("if=", dd_file), "of=/dev/null", "bs=16M", "iflag=direct")
unlink(dd_file)

# One way: create + fill + sync in a new process, then sum() after a
# reopen in another, with the file's pages dropped from the cache.
run <- function(way) {
  path <- file.path(dir, sprintf("rfmalloc-ooc-%d-%s.heap", Sys.getpid(), way))
  on.exit(unlink(path))
  fill <- callr::r(function(path, N, chunk, method, way) {
    suppressPackageStartupMessages(library(Rfmalloc))
    status <- function() {
      s <- readLines("/proc/self/status")
      kb <- function(key) {
        as.numeric(sub("^\\S+:\\s+(\\d+) kB$", "\\1", grep(paste0("^", key, ":"), s, value = TRUE)))
      }
      c(anon = kb("RssAnon"), file = kb("RssFile")) * 1024
    }
    init_fmalloc(path, size_gb = N * 8 / 2^30 + 1)
    t_create <- system.time(
      x <- create_fmalloc_vector("double", N, method = method, name = "x")
    )[["elapsed"]]
    peak <- status()
    cpu <- function() sum(proc.time()[c("user.self", "sys.self")])
    c0 <- cpu()
    t0 <- proc.time()[["elapsed"]]
    for (s in seq(1, N, by = chunk)) {
      e <- min(s + chunk - 1, N)
      if (way == "loop") {
        x[s:e] <- (s:e) * 0.5
      } else {
        fmalloc_write(NULL, "x", s:e, (s:e) * 0.5)
      }
      peak <- pmax(peak, status())
    }
    t_fill <- proc.time()[["elapsed"]] - t0
    cpu_fill <- cpu() - c0
    t_sync <- system.time(fmalloc_sync())[["elapsed"]]
    g <- gc()
    ok <- identical(x[c(1, N)], c(0.5, N * 0.5)) && is_fmalloc(x)
    rm(x)
    cleanup_fmalloc()
    list(create = t_create, fill = t_fill, cpu_fill = cpu_fill, sync = t_sync, peak_anon = peak[["anon"]],
         peak_file = peak[["file"]], gc_used = g["Vcells", 2], gc_trigger = g["Vcells", 4],
         ok = ok)
  }, args = list(path = path, N = N, chunk = chunk, method = method, way = way))
  # Drop the file's pages from the page cache: a cold reopen.
  system2("dd", c(paste0("if=", path), "iflag=nocache", "count=0"), stdout = FALSE, stderr = FALSE)
  read <- callr::r(function(path, N) {
    suppressPackageStartupMessages(library(Rfmalloc))
    h <- fmalloc_open(path, readonly = TRUE)
    t_open <- system.time(x <- fmalloc_get("x", h))[["elapsed"]]
    t_sum <- system.time(s <- sum(x))[["elapsed"]]
    ok <- isTRUE(all.equal(s, 0.5 * N * (N + 1) / 2))
    rm(x)
    invisible(gc())
    fmalloc_close(h)
    list(open = t_open, sum = t_sum, sum_ok = ok)
  }, args = list(path = path, N = N))
  c(fill, read)
}

load0 <- readLines("/proc/loadavg")
gb <- function(b) b / 1e9
cat(sprintf("Out-of-core: %.0f doubles (%.1f GB), chunk %.0f, method %s, heap file in %s\n",
            N, gb(bytes), chunk, method, dir))
cat(sprintf("%s; %d cores, %.1f GiB RAM; load average at start %s\n",
            format(Sys.time(), "%Y-%m-%d %H:%M %Z"), parallel::detectCores(),
            as.numeric(sub("\\D+(\\d+).*", "\\1", grep("^MemTotal", readLines("/proc/meminfo"),
                                                        value = TRUE))) / 2^20,
            paste(strsplit(load0, " ")[[1]][1:3], collapse = " ")))
cat(sprintf("dd (O_DIRECT, 16 MiB blocks, same run): write %.2f GB/s, read %.2f GB/s\n\n",
            gb(dd_write), gb(dd_read)))
labels <- c(loop = "plain loop x[i:j] <- v", write = "fmalloc_write(NULL, \"x\", i:j, v)")
for (w in ways) {
  r <- run(w)
  wr <- bytes / (r$create + r$fill + r$sync)
  cat(sprintf("%s:\n", labels[[w]]))
  cat(sprintf("  create (name =)        %8.2f s\n", r$create))
  cat(sprintf("  fill                   %8.2f s  %.2f GB/s (CPU %.2f s)\n", r$fill,
              gb(bytes / r$fill), r$cpu_fill))
  cat(sprintf("  sync                   %8.2f s\n", r$sync))
  cat(sprintf("  create + fill + sync   %8.2f s  %.2f GB/s = %3.0f %% of dd write (target >= 50 %%)\n",
              r$create + r$fill + r$sync, gb(wr), 100 * wr / dd_write))
  cat(sprintf("  peak RssAnon / RssFile %8.0f MB / %.0f MB (target RssAnon <= 1 GB)\n",
              r$peak_anon / 1e6, r$peak_file / 1e6))
  cat(sprintf("  gc() after the fill    used %.0f MB, trigger %.0f MB\n", r$gc_used, r$gc_trigger))
  cat(sprintf("  reopen (cold) + get    %8.2f s\n", r$open))
  cat(sprintf("  sum()                  %8.2f s  %.2f GB/s = %3.0f %% of dd read (target >= 90 %%)\n",
              r$sum, gb(bytes / r$sum), 100 * bytes / r$sum / dd_read))
  cat(sprintf("  values checked         %s\n", if (r$ok && r$sum_ok) "ok" else "WRONG"))
  cat(sprintf("  load average now       %s\n",
              paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = " ")))
}
