"""Cache keys: what makes two build steps interchangeable, as a pure function of their inputs.

A key is ``sha256`` over the canonical encoding of an *inputs* document. The same document is kept
next to the result in the local cache, so "why was this step not cached" is a diff of two documents.

Encoding (version ``lamina.cachekey.v1``): a JSON object with sorted keys, compact separators
(``,`` and ``:``), UTF-8, non-ASCII kept literal, no trailing newline; the key is ``sha256`` of those
bytes. The objects per operation are::

    {"v": 1, "op": "image",   "manifest": "<manifest digest>", "platform": "linux/amd64"}
    {"v": 1, "op": "scratch", "platform": "linux/amd64"}
    {"v": 1, "op": "run",     "parent": K, "argv": [...], "env": [...], "user": U, "workdir": W,
                              "network": N, "inline_files": [[path, content], ...], ["security": S],
                              ["mounts": [{<lamina.build.mounts.mount_key>, "input": I}, ...]]}
    {"v": 1, "op": "copy",    "parent": K, "add": bool, "sources": [...], "dest": D, "chown": C|null,
                              "chmod": M|null, "link": bool, "heredocs": [[name, content], ...],
                              "from": null | {"stage": K2} | {"image": DIGEST} | "stage-files",
                              "exclude": [...],
                              "checksum": "sha256:..." | null, "content": "<checksum of what it reads>"}
    {"v": 1, "op": "workdir", "parent": K, "path": P, "user": U}
    {"v": 1, "op": "merge",   "parent": K, "layer": L}

(``"from": "stage-files"`` is ``COPY --from=<stage>``'s content key, ``content`` the checksum of the files
it copies; the definition key (``{"stage": K2}``) is recorded as its alias, see :mod:`lamina.build.copykeys`.
``COPY --link``, as BuildKit's MergeOp: the copy is keyed on the scratch key of the platform — its
``parent`` is never the step below — so ``L`` and its one-layer result stay the same on any base; the
step's key merges ``L`` onto the real parent. COPY's ``parents``, ``keep_git_dir`` and ``unpack`` appear only
when set.)

(RUN's ``network`` is the effective mode, the build's ``--network`` already applied: ``default`` (the
sandbox), ``none`` or ``host``; ``security`` appears only for ``insecure``, so the keys of ordinary steps
are those of every earlier version, as BuildKit leaves default modes out of an ExecOp's digest.
A RUN --mount's ``input`` is what it reads, as BuildKit keys an ExecOp's mount inputs: the content
checksum of a bind's context (or named context) path, the key of a ``from=`` stage, the manifest digest
of a ``from=`` image; ``null`` for a cache mount without ``from=``, a tmpfs, a secret or an ssh socket —
a cache directory's content, a secret's value and a socket's agent never enter a key.
COPY's ``content`` is ``lamina.build.filecopy.copy_checksum``: names, modes, bytes of exactly the
selected context files, URL digests, git commits, heredocs; ``null`` for ``--from=<image>`` and for the
definition key of ``--from=<stage>``, whose source key stands in.
The USER in effect does not change what COPY writes, so it is not in the key.)

``parent`` is the key of the step below (the base image key for the first step of a stage); ``FROM
<stage>`` continues with that stage's final key. A :class:`~lamina.build.ops.MetaStep` changes only
the image config, so it keeps its parent's key. Line numbers, ``created_by`` text, mtimes and the
wall clock never enter a key, nor do proxy variables (``RunStep.proxy_env``), as in BuildKit.
The remote cache stores these keys as cacheconfig record digests.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from lamina.build.ops import CopyStep, MetaStep, RunExtras, RunStep, Step, WorkdirStep
from lamina.oci import Digest, Platform

__all__ = [
    "VERSION",
    "copy_inputs",
    "describe_difference",
    "encode",
    "image_inputs",
    "key_of",
    "merge_inputs",
    "run_inputs",
    "scratch_inputs",
    "step_inputs",
    "workdir_inputs",
]

VERSION = 1
Inputs = dict[str, Any]


def encode(inputs: Inputs) -> bytes:
    """The canonical bytes of an inputs document (see the module docstring)."""
    return json.dumps(inputs, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_of(inputs: Inputs) -> Digest:
    return Digest("sha256", hashlib.sha256(encode(inputs)).hexdigest())


def image_inputs(manifest: Digest, platform: Platform) -> Inputs:
    return {"v": VERSION, "op": "image", "manifest": str(manifest), "platform": str(platform)}


def scratch_inputs(platform: Platform) -> Inputs:
    return {"v": VERSION, "op": "scratch", "platform": str(platform)}


def run_inputs(step: RunStep, parent: Digest, *, mounts: Sequence[str | None] = ()) -> Inputs:
    """``mounts``: per RUN --mount, the identity of what it reads (see the module docstring)."""
    inputs: Inputs = {
        "v": VERSION,
        "op": "run",
        "parent": str(parent),
        "argv": list(step.argv),
        "env": list(step.env),
        "user": step.user,
        "workdir": step.workdir,
        "network": step.network,
        "inline_files": [list(f) for f in step.inline_files],
    }
    if step.security != "sandbox":
        inputs["security"] = step.security
    if step.extras != RunExtras():  # --add-host/--ulimit/--shm-size, as in BuildKit's ExecOp meta; only when set
        inputs["extras"] = {"hosts": [list(h) for h in step.extras.hosts],
                            "ulimits": [list(u) for u in step.extras.ulimits], "shm_size": step.extras.shm_size}
        if step.extras.hostname is not None:  # BUILDKIT_SANDBOX_HOSTNAME; absent otherwise (earlier keys hold)
            inputs["extras"]["hostname"] = step.extras.hostname
    if step.mounts:  # present only with mounts, so the keys of other RUNs are those of earlier versions
        from lamina.build.mounts import mount_key

        reads = list(mounts) or [None] * len(step.mounts)
        inputs["mounts"] = [{**mount_key(m), "input": r} for m, r in zip(step.mounts, reads, strict=True)]
    return inputs


def copy_inputs(
    step: CopyStep,
    parent: Digest,
    *,
    content: str | None,
    source_stage: Digest | None = None,
    source_image: Digest | None = None,
) -> Inputs:
    """``content`` is the checksum of exactly the selected files (names, modes, bytes; never mtimes)."""
    source: dict[str, str] | None = None
    if source_stage is not None:
        source = {"stage": str(source_stage)}
    elif source_image is not None:
        source = {"image": str(source_image)}
    inputs: Inputs = {
        "v": VERSION,
        "op": "copy",
        "parent": str(parent),
        "add": step.is_add,
        "sources": list(step.sources),
        "dest": step.dest,
        "chown": step.chown,
        "chmod": step.chmod,
        "link": step.link,
        "heredocs": [list(h) for h in step.heredocs],
        "from": source,
        "exclude": list(step.exclude),
        "checksum": step.checksum,
        "content": content,
    }
    if step.parents:  # present only when set, so the keys of other COPYs are those of earlier versions
        inputs["parents"] = True
    if step.keep_git_dir:
        inputs["keep_git_dir"] = True
    if step.unpack is not None:  # ADD --unpack=true|false; absent when not given, as above
        inputs["unpack"] = step.unpack
    return inputs


def merge_inputs(parent: Digest, layer: Digest) -> Inputs:
    """``COPY --link``: the link layer (keyed on scratch, see :func:`copy_inputs`) merged onto ``parent``."""
    return {"v": VERSION, "op": "merge", "parent": str(parent), "layer": str(layer)}


def workdir_inputs(step: WorkdirStep, parent: Digest) -> Inputs:
    return {"v": VERSION, "op": "workdir", "parent": str(parent), "path": step.path, "user": step.user}


def step_inputs(
    step: Step,
    parent: Digest,
    *,
    mounts: Sequence[str | None] = (),
    content: str | None = None,
    source_stage: Digest | None = None,
    source_image: Digest | None = None,
) -> Inputs | None:
    """The inputs document of ``step`` on top of ``parent``; ``None`` for a MetaStep (keeps the parent key)."""
    if isinstance(step, MetaStep):
        return None
    if isinstance(step, RunStep):
        return run_inputs(step, parent, mounts=mounts)
    if isinstance(step, CopyStep):
        return copy_inputs(step, parent, content=content, source_stage=source_stage, source_image=source_image)
    if isinstance(step, WorkdirStep):
        return workdir_inputs(step, parent)
    raise TypeError(f"unknown step type {type(step).__name__}")


def _env_diff(old: list[str], new: list[str]) -> str | None:
    def as_map(items: list[str]) -> dict[str, str]:
        return dict(item.partition("=")[::2] for item in items)

    before, after = as_map(old), as_map(new)
    for name in sorted(before.keys() | after.keys()):
        if before.get(name) != after.get(name):
            return f"env/arg {name} changed"
    return None


def describe_difference(old: Inputs, new: Inputs) -> str:
    """The first input that differs between a cached step (``old``) and this one, in words."""
    if old.get("op") != new.get("op"):
        return f"instruction changed ({old.get('op')} -> {new.get('op')})"
    if old.get("parent") != new.get("parent"):
        return "parent step changed"
    if old.get("op") == "image" and old.get("manifest") != new.get("manifest"):
        return f"base image digest changed ({old.get('manifest')} -> {new.get('manifest')})"
    if old.get("env") != new.get("env"):
        env = _env_diff(list(old.get("env") or []), list(new.get("env") or []))
        if env:
            return env
    if old.get("content") != new.get("content") and all(
        old.get(k) == new.get(k) for k in ("sources", "dest", "from", "heredocs")
    ):
        where = "COPY --from source" if new.get("from") == "stage-files" else "context"  # content-keyed --from
        return f"copied files changed in the {where}"
    if old.get("from") != new.get("from"):
        return "COPY --from source changed"
    old_mounts, new_mounts = old.get("mounts") or [], new.get("mounts") or []
    if old_mounts != new_mounts:
        if not (isinstance(old_mounts, list) and isinstance(new_mounts, list)):  # fingerprints: one hash each
            return "RUN --mount options or what they read changed"

        def spec(mounts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{k: v for k, v in m.items() if k != "input"} for m in mounts]

        if spec(old_mounts) == spec(new_mounts):
            return "what a RUN --mount reads changed (bound files or a from= source)"
        return "RUN --mount options changed"
    for name, default in (("network", "default"), ("security", "sandbox")):
        if old.get("op") == "run" and old.get(name, default) != new.get(name, default):
            return f"{name} mode changed ({old.get(name, default)} -> {new.get(name, default)})"
    if old.get("extras") != new.get("extras"):
        return "--add-host, --ulimit or --shm-size changed"
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            return f"{name} changed"
    return "no difference"
