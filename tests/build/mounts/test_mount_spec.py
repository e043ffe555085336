"""The pure parts: prepared mounts -> runc mounts and mountpoint stubs, and what mounts add to a RUN's key."""

from __future__ import annotations

import pytest

from lamina.build import cachekey
from lamina.build.mounts import BindMount, CacheMount, MountFrom, SecretMount, SshMount, TmpfsMount
from lamina.build.ops import RunStep
from lamina.build.worker.runmounts import PreparedMount, mount_stubs, runc_mounts
from lamina.build.worker.runtime_spec import RunSpec, runtime_config
from lamina.oci import Digest

PARENT = Digest("sha256", "0" * 64)
PREPARED = (
    PreparedMount("/root/.cache/pip", "/state/cachemounts/k/0", readonly=False),
    PreparedMount("/app/requirements.txt", "/ctx/requirements.txt", readonly=True, is_dir=False),
    PreparedMount("/scratch", "tmpfs", kind="tmpfs", readonly=False, size=1 << 20),
    PreparedMount("/run/secrets/token", "/dev/shm/lamina-run-x/secret-0", is_dir=False),
)


def test_runc_mounts_in_order_with_their_options() -> None:
    mounts = [m.to_json() for m in runc_mounts(PREPARED)]
    assert mounts == [  # shallow targets first, else in Dockerfile order
        {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", f"size={1 << 20}"]},
        {"destination": "/app/requirements.txt", "type": "bind", "source": "/ctx/requirements.txt",
         "options": ["rbind", "rprivate", "ro"]},
        {"destination": "/root/.cache/pip", "type": "bind", "source": "/state/cachemounts/k/0",
         "options": ["rbind", "rprivate", "rw"]},
        {"destination": "/run/secrets/token", "type": "bind", "source": "/dev/shm/lamina-run-x/secret-0",
         "options": ["rbind", "rprivate", "ro"]},
    ]
    nested = runc_mounts([PreparedMount("/c/inner", "/b"), PreparedMount("/c", "/a", readonly=False)])
    assert [m.destination for m in nested] == ["/c", "/c/inner"]  # the inner bind is not hidden by /c
    config = runtime_config(RunSpec(argv=("true",), network="none", mounts=runc_mounts(PREPARED)), "/rootfs",
                            host_limits={"RLIMIT_NOFILE": (1024, 1024)})
    destinations = [m["destination"] for m in config["mounts"]]
    assert destinations.index("/etc/resolv.conf") < destinations.index("/root/.cache/pip")  # after the container's


def test_stubs_are_runtime_binds_scripts_and_mounts_but_not_proc_sys_dev() -> None:
    assert mount_stubs(PREPARED, ["/dev/pipes/EOF"]) == (
        ("etc/hosts", False),
        ("etc/resolv.conf", False),
        ("dev/pipes/EOF", False),
        ("root/.cache/pip", True),
        ("app/requirements.txt", False),
        ("scratch", True),
        ("run/secrets/token", False),
    )


@pytest.mark.parametrize("target", ["relative", "/", "/a/../b", "/a/"])
def test_prepared_targets_must_be_clean_absolute_paths(target: str) -> None:
    with pytest.raises(ValueError, match="clean absolute path"):
        PreparedMount(target, "/x")


def _key(*mounts: object, inputs: tuple[str | None, ...] = ()) -> Digest:
    step = RunStep(argv=("sh", "-c", "make"), env=(), user="", workdir="/", mounts=mounts)  # type: ignore[arg-type]
    return cachekey.key_of(cachekey.run_inputs(step, PARENT, mounts=inputs))


def test_mount_specs_are_in_the_key_but_no_secret_or_cache_content() -> None:
    plain = cachekey.run_inputs(RunStep(argv=("sh", "-c", "make"), env=(), user="", workdir="/"), PARENT)
    assert "mounts" not in plain  # RUNs without mounts keep the keys of earlier versions
    cache = CacheMount("/c", id="c")
    assert _key(cache) == _key(cache, inputs=(None,))
    assert _key(cache) != _key(CacheMount("/c", id="other"))
    assert _key(cache) != _key(CacheMount("/c", id="c", sharing="locked"))
    assert _key(cache) != _key(CacheMount("/c", id="c", uid=1000))
    bind = BindMount("/src")
    assert _key(bind, inputs=("sha256:aa",)) != _key(bind, inputs=("sha256:bb",))  # the bound content
    assert _key(bind, inputs=("sha256:aa",)) != _key(BindMount("/src", readonly=False), inputs=("sha256:aa",))
    assert _key(BindMount("/o", origin=MountFrom(stage=0)), inputs=("k1",)) != \
        _key(BindMount("/o", origin=MountFrom(stage=0)), inputs=("k2",))
    assert _key(TmpfsMount("/t")) != _key(TmpfsMount("/t", size=1))
    secret = SecretMount("token", "/run/secrets/token")
    assert _key(secret) != _key(SecretMount("token", "/run/secrets/token", mode=0o444))
    document = cachekey.encode(cachekey.run_inputs(
        RunStep(argv=("true",), env=(), user="", workdir="/", mounts=(secret, SshMount("default", "/s"))), PARENT))
    assert b'"type":"secret"' in document and b'"type":"ssh"' in document


def test_why_a_run_with_mounts_missed() -> None:
    step = RunStep(argv=("true",), env=(), user="", workdir="/", mounts=(BindMount("/src"),))
    before = cachekey.run_inputs(step, PARENT, mounts=("sha256:aa",))
    after = cachekey.run_inputs(step, PARENT, mounts=("sha256:bb",))
    assert cachekey.describe_difference(before, after) == \
        "what a RUN --mount reads changed (bound files or a from= source)"
    other = cachekey.run_inputs(RunStep(argv=("true",), env=(), user="", workdir="/",
                                        mounts=(BindMount("/src", readonly=False),)), PARENT, mounts=("sha256:aa",))
    assert cachekey.describe_difference(before, other) == "RUN --mount options changed"
