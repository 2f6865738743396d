## Process 3: reopen for writing; modify in place, rename, remove.
library(Rfmalloc)
path <- commandArgs(trailingOnly = TRUE)[[1]]

heap <- fmalloc_open(path)
p <- fmalloc_get("prices", heap)
p[1:2] <- c(-1, -2)   # writes into the file
fmalloc_get("prices", heap)[1:3]
fmalloc_rename("groups", "labels", heap)
fmalloc_rm("table", heap)   # frees its space
fmalloc_ls(heap)[, c("name", "class", "length", "bytes")]
fmalloc_info(heap)[, c("size", "used", "free", "objects")]
rm(p)
fmalloc_close(heap)
