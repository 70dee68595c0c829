"""The per-process batch cache and its invalidation over Redis pub/sub."""
