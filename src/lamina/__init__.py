"""lamina: container image builds with the layer cache in an OCI registry, and that registry."""

__version__ = "0.1.0"
__all__ = ["__version__"]
