"""The build worker: layer blobs, safe unpacking, snapshots, and RUN steps in real OCI containers.

A RUN step, as the solver drives it::

    store = LayerStore(state)                       # unpacked layers by diffID (lower dirs)
    snapshotter = detect_snapshotter(state)         # overlayfs, or copying where it cannot mount
    lowers = [store.unpack(blob, media_type, diff_id) for ...][::-1]   # top first
    with snapshotter.prepare(lowers) as snap:
        user = resolve_user(snap.rootfs, step.user)
        await RuncExecutor(state).run(RunSpec(argv, env, cwd, user.uid, user.gid, ...), snap.rootfs, on_line)
    blob = write_layer(snap.upper, blobs_dir, compression="gzip", source_date_epoch=sde)
    store.adopt(snap.upper, blob.diff_id)          # becomes the next step's top lower
"""

from .compression import Compression, UnknownMediaType, compression_of, media_type_for, open_layer
from .copydiff import CopySnapshotter, detect_snapshotter
from .executor import Executor, OutputCallback, RuncExecutor, RunFailed
from .extract import LayerError, extract_layer, extract_layer_async
from .layerstore import LayerStore
from .runtime_spec import Mount, RunSpec, runtime_config
from .snapshot import (
    RUN_MOUNTPOINTS,
    ActiveSnapshot,
    OverlaySnapshotter,
    SnapshotError,
    Snapshotter,
    cleanup_stale_snapshots,
)
from .tarwrite import LayerBlob, write_layer
from .users import ResolvedUser, UnknownUser, resolve_in_root, resolve_user

__all__ = [
    "RUN_MOUNTPOINTS",
    "ActiveSnapshot",
    "Compression",
    "CopySnapshotter",
    "Executor",
    "LayerBlob",
    "LayerError",
    "LayerStore",
    "Mount",
    "OutputCallback",
    "OverlaySnapshotter",
    "ResolvedUser",
    "RunFailed",
    "RunSpec",
    "RuncExecutor",
    "SnapshotError",
    "Snapshotter",
    "UnknownMediaType",
    "UnknownUser",
    "cleanup_stale_snapshots",
    "compression_of",
    "detect_snapshotter",
    "extract_layer",
    "extract_layer_async",
    "media_type_for",
    "open_layer",
    "resolve_in_root",
    "resolve_user",
    "runtime_config",
    "write_layer",
]
