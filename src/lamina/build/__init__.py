"""lamina build: Dockerfile frontend -> solver (cache keys, caches) -> worker (snapshots, runc) -> exporters."""
