"""A real Ceph RADOS Gateway for the S3 tests, started by the repository's own script.

``scripts/services/ceph-rgw.sh start DIR`` brings up a monitor, one memstore OSD and radosgw on free
loopback ports (1.3-2 s) and creates an S3 user; the session-scoped ``ceph_rgw`` fixture runs it once
per test session and stops it at the end. Each test gets its own bucket prefix from :func:`s3_url`.
In CI the Debian packages are installed (scripts/install-system-deps.sh), so nothing skips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["CephRgw", "ceph_rgw", "s3_url", "start_ceph_rgw"]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "ceph-rgw.sh"
BUCKET = "lamina-tests"


@dataclass
class CephRgw:
    directory: Path
    endpoint: str
    access_key: str
    secret_key: str
    start_seconds: float

    @property
    def env(self) -> dict[str, str]:
        """The AWS chain's environment variables for a process that should use this gateway."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "default",
        }

    def client(self):  # type: ignore[no-untyped-def]
        import botocore.config
        import botocore.session

        config = botocore.config.Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                        response_checksum_validation="when_required")
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="default", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=config,
        )

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory)], check=False, timeout=60)


def start_ceph_rgw() -> CephRgw:
    missing = [tool for tool in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: run scripts/install-system-deps.sh")
    directory = Path(tempfile.mkdtemp(prefix="ceph.", dir="/tmp"))  # short: admin socket paths under it
    started = time.monotonic()
    result = subprocess.run(["bash", str(SCRIPT), "start", str(directory)], capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(directory)], check=False, timeout=60)
        raise RuntimeError(f"ceph-rgw.sh start failed ({result.returncode}): {result.stderr[-3000:]}")
    values = dict(
        line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines() if line.startswith("export ")
    )
    rgw = CephRgw(directory, values["CEPH_RGW_ENDPOINT"], values["AWS_ACCESS_KEY_ID"],
                  values["AWS_SECRET_ACCESS_KEY"], seconds)
    rgw.client().create_bucket(Bucket=BUCKET)
    return rgw


@pytest.fixture(scope="session")
def ceph_rgw() -> Iterator[CephRgw]:
    """One gateway for the session, with the AWS chain's variables set in this process (and so inherited
    by every registry subprocess a test starts) while it runs."""
    rgw = start_ceph_rgw()
    saved = {key: os.environ.get(key) for key in rgw.env}
    os.environ.update(rgw.env)
    try:
        yield rgw
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        rgw.stop()


def s3_url(rgw: CephRgw, scope: str | Path, *, redirect: bool = True) -> str:
    """The ``blobs`` setting for a prefix of its own per ``scope`` (a test's tmp_path: the same scope
    gives the same prefix, as one root gives the same directory)."""
    prefix = hashlib.sha256(str(scope).encode()).hexdigest()[:16]
    query = f"endpoint={rgw.endpoint}&region=default" + ("" if redirect else "&redirect=false")
    return f"s3://{BUCKET}/t-{prefix}?{query}"
