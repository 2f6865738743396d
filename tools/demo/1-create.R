## Process 1: create a heap file and store objects in it by name.
library(Rfmalloc)
path <- commandArgs(trailingOnly = TRUE)[[1]]

## A new heap. The file is sparse: 1 GiB costs no disk space until written.
heap <- fmalloc_open(path, size_gb = 1)
heap

## Save R objects under names: vectors, factors, data frames, ...
prices <- seq(100, by = 0.25, length.out = 1e6)
fmalloc_save(prices, "prices", heap)
fmalloc_save(factor(c("a", "b", "a")), "groups", heap)
fmalloc_save(data.frame(id = 1:3, name = c("x", "y", "z")), "table", heap)

## Or create a vector directly in the heap; writes go straight to the file.
counts <- create_fmalloc_vector("integer", 5, heap = heap, name = "counts")
counts[1:3] <- c(10L, 20L, 30L)
counts

fmalloc_ls(heap)[, c("name", "class", "length", "bytes")]

## Vectors from the heap keep the file open until they are gone: rm() them
## before closing (fmalloc_close() says so if some are still in use).
rm(counts)
fmalloc_close(heap)
