//! File format v1: layout table, offsets, checksums.
