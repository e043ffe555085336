"""``lamina build``: Docker/buildx flags -> :class:`~lamina.build.builder.BuildRequest`, one line per error."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["configure"]

RUNTIMES = ("runc", "crun")  # OCI runtimes RUN steps can use; each binary is the Debian package of its name


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if not sep:
        value = os.environ.get(key, "")  # docker build --build-arg K takes K from the environment
    return key, value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", metavar="CONTEXT", help="the build context directory")
    parser.add_argument("-f", "--file", dest="file", metavar="DOCKERFILE",
                        help="the Dockerfile (default CONTEXT/Dockerfile; - = stdin)")
    parser.add_argument("-t", "--tag", dest="tags", action="append", default=[], metavar="REF",
                        help="name:tag of the image (repeatable)")
    parser.add_argument("--build-arg", dest="build_args", action="append", type=_key_value, default=[],
                        metavar="K=V", help="set a build-time variable")
    parser.add_argument("--target", metavar="STAGE", help="build this stage (default: the last)")
    parser.add_argument("--platform", default="linux/amd64", metavar="OS/ARCH",
                        help="target platform (default linux/amd64)")
    parser.add_argument("--push", action="store_true", help="push the image to every -t reference")
    parser.add_argument("--output", "-o", dest="outputs", action="append", default=[], metavar="SPEC",
                        help="type=registry | type=oci,dest=FILE.tar | type=local,dest=DIR")
    parser.add_argument("--no-cache", action="store_true", help="do not use the cache (results are still stored)")
    parser.add_argument("--label", dest="labels", action="append", type=_key_value, default=[], metavar="K=V",
                        help="set an image label")
    parser.add_argument("--progress", choices=("auto", "plain", "tty"), default="auto")
    parser.add_argument("--root", type=Path, metavar="STATE_DIR",
                        help="state directory (default: the per-user data directory)")
    parser.add_argument("--network", choices=("default", "host", "none"), default="default",
                        help="network for RUN steps: default = own namespace with outbound access through "
                        "slirp4netns (no access to the host's loopback), none = loopback only, "
                        "host = the host's (needs --allow network.host)")
    parser.add_argument("--allow", dest="allow", action="append", default=[], metavar="ENTITLEMENT",
                        help="grant an entitlement: network.host, security.insecure "
                        "(a comma-separated list; repeatable)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="runc",
                        help="OCI runtime for RUN steps (default runc; crun needs a cgroup v2 host)")
    parser.add_argument("--compression", choices=("gzip", "zstd", "uncompressed"), default="gzip",
                        help="layer compression (default gzip)")
    parser.add_argument("--cache-from", dest="cache_from", action="append", default=[], metavar="SPEC",
                        help="import a cache: type=registry,ref=REF | type=local,src=DIR[,tag=T|digest=D] | REF")
    parser.add_argument("--cache-to", dest="cache_to", action="append", default=[], metavar="SPEC",
                        help="export the cache: type=registry,ref=REF[,mode=min|max][,image-manifest=..]"
                        "[,oci-mediatypes=..][,ignore-error=..] | type=local,dest=DIR[,tag=T] | type=inline")
    parser.add_argument("--explain-cache", action="store_true",
                        help="print, at the end, a table of every step: CACHED from where, or MISS and why")
    parser.set_defaults(func=run)


def _read_dockerfile(args: argparse.Namespace, context: Path) -> tuple[str, str, Path]:
    if args.file == "-":
        return sys.stdin.read(), "Dockerfile", context
    path = Path(args.file) if args.file else context / "Dockerfile"
    try:
        return path.read_text(encoding="utf-8"), path.name, path.parent
    except FileNotFoundError:
        raise ValueError(f"Dockerfile not found: {path}") from None


def _epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"invalid SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970")
    return int(value)


def run(args: argparse.Namespace) -> int:
    import asyncio  # here, not at the top: `lamina build --help` and flag errors need no event loop

    from lamina.build.builder import BuildRequest, build
    from lamina.build.cacheopts import parse_cache_from, parse_cache_to
    from lamina.build.entitlements import parse_allow
    from lamina.build.exporter import parse_output
    from lamina.build.progress import make_progress
    from lamina.oci import Platform

    try:
        context = Path(args.context)
        if not context.is_dir():
            raise ValueError(f"build context {context} is not a directory")
        dockerfile, name, dockerfile_dir = _read_dockerfile(args, context)
        request = BuildRequest(
            context_dir=context.resolve(),
            dockerfile=dockerfile,
            dockerfile_name=name,
            dockerfile_dir=dockerfile_dir.resolve(),
            tags=tuple(args.tags),
            build_args=dict(args.build_args),
            target=args.target,
            platform=Platform.from_string(args.platform),
            push=args.push,
            outputs=tuple(parse_output(o) for o in args.outputs),
            no_cache=args.no_cache,
            labels=dict(args.labels),
            root=args.root,
            network=args.network,
            allow=parse_allow(args.allow),
            runtime=args.runtime,
            source_date_epoch=_epoch(),
            compression=args.compression,
            cache_from=tuple(parse_cache_from(c) for c in args.cache_from),
            cache_to=tuple(parse_cache_to(c) for c in args.cache_to),
        )
        if request.push and not request.tags:
            raise ValueError("--push needs at least one -t REF")
        progress = make_progress(args.progress)
        try:
            result = asyncio.run(build(request, progress))
        finally:
            progress.close()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # every failure is one clear line, exit 1
        message = str(exc) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    if args.explain_cache:
        from lamina.build.explain import explain_table

        print(explain_table(result.steps), file=sys.stderr)
    print(result.digest)
    return 0
