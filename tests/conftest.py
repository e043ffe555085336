"""Shared fixtures: real registries on free loopback ports and a busybox-static root filesystem.

Every server is a real subprocess (lamina's registry, CNCF distribution), waited for by polling
``GET /v2/``, torn down even when a test fails, and its output is shown when it fails to start.
A test that needs a binary the machine lacks is skipped with the reason; CI installs all of them
through ``scripts/install-system-deps.sh``, so nothing may skip there: with ``CI=true`` a skip fails the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers.binaries import require_binary
from helpers.ceph import ceph_rgw  # noqa: F401  (a session fixture: tests/store, tests/registry/s3)
from helpers.ciskips import CiSkipGuard, ci_enabled
from helpers.images import PushedImage, PushedIndex, busybox_image, make_busybox_rootfs, two_platform_index
from helpers.pgfixture import postgres_server  # noqa: F401  (a session fixture: tests/store, tests/registry)
from helpers.registries import (
    DISTRIBUTION_BINARY,
    RegistryProcess,
    start_distribution,
    start_lamina,
)

LaminaFactory = Callable[..., RegistryProcess]


def pytest_configure(config: pytest.Config) -> None:
    """In CI (``CI=true``) a skipped test fails the run, naming the test and its reason (helpers.ciskips)."""
    if ci_enabled():
        config.pluginmanager.register(CiSkipGuard(), "lamina-ci-skip-guard")


@pytest.fixture(scope="session")
def lamina_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """One lamina registry shared by the session (default policy). Do not stop it: use ``make_lamina_registry``."""
    server = start_lamina(tmp_path_factory.mktemp("lamina-registry"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_lamina_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaminaFactory]:
    """Factory for private lamina registries (own root, optional config text), stopped after the test.

    ``make_lamina_registry(config='legacy_buildkit_cache = "reject"\\n')`` -> a started RegistryProcess.
    """
    servers: list[RegistryProcess] = []

    def make(config: str | None = None, *, config_suffix: str = ".toml", workers: int | None = None) -> RegistryProcess:
        server = start_lamina(
            tmp_path_factory.mktemp("lamina-registry"), config=config, config_suffix=config_suffix, workers=workers
        )
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def distribution_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    """CNCF distribution 2.8 (Debian's docker-registry): filesystem storage in tmp, delete enabled."""
    require_binary(DISTRIBUTION_BINARY, "docker-registry")
    server = start_distribution(tmp_path_factory.mktemp("distribution"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root filesystem: /bin/busybox (busybox-static) + applet links, passwd/group (root, nobody, app
    1000:1000), /tmp 1777. Shared by the session: copy it before changing anything in it."""
    require_binary("busybox", "busybox-static")
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox-rootfs"))


@pytest.fixture(scope="session")
def skopeo_bin() -> str:
    return require_binary("skopeo", "skopeo")


@pytest.fixture(scope="session")
def busybox_base(lamina_registry: RegistryProcess, busybox_rootfs: Path, skopeo_bin: str) -> PushedImage:
    """The busybox base image pushed (by skopeo) to the session's lamina registry as
    ``HOST/base/busybox:latest``: one gzip layer, linux/amd64, ``Env PATH``, ``Cmd ["sh"]``."""
    return busybox_image(lamina_registry, rootfs=busybox_rootfs)


@pytest.fixture(scope="session")
def two_platform_base(lamina_registry: RegistryProcess, busybox_rootfs: Path, skopeo_bin: str) -> PushedIndex:
    """``HOST/base/multi:latest``: an OCI index of linux/amd64 and linux/arm64 images whose
    ``/platform.txt`` says which platform they are."""
    return two_platform_index(lamina_registry, rootfs=busybox_rootfs)
