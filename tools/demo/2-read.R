## Process 2: a new R process opens the same file (read-only) and finds the
## objects by name, without reading or copying them.
library(Rfmalloc)
path <- commandArgs(trailingOnly = TRUE)[[1]]

heap <- fmalloc_open(path, readonly = TRUE)
heap

prices <- fmalloc_get("prices", heap)
is_fmalloc(prices)   # the data are in the mapped file
length(prices)
sum(prices)
fmalloc_get("groups", heap)
fmalloc_get("table", heap)

## The in-place writes of process 1 are in the file.
fmalloc_get("counts", heap)

rm(prices)
fmalloc_close(heap)
