"""One handler module per resource of the distribution-spec (base, blobs, uploads, manifests, ...)."""
