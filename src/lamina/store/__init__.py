"""Registry storage: metadata (SQLite) and blobs (filesystem) behind small protocols."""
