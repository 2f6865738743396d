//! Cross-process locking (one writer or many readers) and fork detection.
