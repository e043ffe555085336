"""The OCI distribution client shared by the builder, the cache and the tests.

Knows the protocol (auth, retries, verified transfers), nothing of builds. The public names are listed
in ``__all__`` (pinned by a test); the modules behind them are free to change.
"""

from .auth import pull_scope, push_scope
from .blobs import PushOutcome
from .client import ClientPool, RegistryClient
from .credentials import CredentialError, Credentials, CredentialStore
from .errors import (
    DigestMismatch,
    NoMatchingPlatform,
    NotFound,
    RegistryError,
    RegistryUnreachable,
    TransferInterrupted,
    Unauthorized,
)
from .manifests import ALL_MANIFEST_TYPES, FetchedManifest, ManifestInfo
from .resolve import ResolvedImage, normalize_platform, resolve_image, resolve_platform, select_platform
from .session import INSECURE_ENV, RetryPolicy, TransferKind, TransferStats, insecure_registries_from_env, is_loopback

__all__ = [
    "ALL_MANIFEST_TYPES",
    "INSECURE_ENV",
    "ClientPool",
    "CredentialError",
    "CredentialStore",
    "Credentials",
    "DigestMismatch",
    "FetchedManifest",
    "ManifestInfo",
    "NoMatchingPlatform",
    "NotFound",
    "PushOutcome",
    "RegistryClient",
    "RegistryError",
    "RegistryUnreachable",
    "ResolvedImage",
    "RetryPolicy",
    "TransferInterrupted",
    "TransferKind",
    "TransferStats",
    "Unauthorized",
    "insecure_registries_from_env",
    "is_loopback",
    "normalize_platform",
    "pull_scope",
    "push_scope",
    "resolve_image",
    "resolve_platform",
    "select_platform",
]
