"""``lamina build``: Docker/buildx flags -> :class:`~lamina.build.builder.BuildRequest`, one line per error."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lamina.build.refusedflags import RefusedFlag, add_refused_flags, check_refused_flags
from lamina.gcpause import collector_paused

if TYPE_CHECKING:
    from lamina.build.cacheopts import CacheTo
    from lamina.oci import Platform

__all__ = ["configure"]

RUNTIMES = ("runc", "crun")  # OCI runtimes RUN steps can use; each binary is the Debian package of its name
PROGRESS_MODES = ("auto", "plain", "tty", "quiet")


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
    parser.add_argument("--platform", dest="platforms", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                        help="target platform(s), comma-separated or repeated: one image each, in one OCI index "
                        "when several (default: the host's)")
    parser.add_argument("--push", action="store_true", help="push the image to every -t reference")
    parser.add_argument("--output", "-o", dest="outputs", action="append", default=[], metavar="SPEC",
                        help="type=registry | type=oci,dest=FILE.tar | type=docker[,dest=FILE.tar] | "
                        "type=local,dest=DIR (repeatable)")
    parser.add_argument("--no-cache", action="store_true", help="do not use the cache (results are still stored)")
    parser.add_argument("--label", dest="labels", action="append", type=_key_value, default=[], metavar="K=V",
                        help="set an image label")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default=None,
                        help="progress output on stderr (default $BUILDKIT_PROGRESS, else auto: tty on a terminal, "
                        "else plain)")
    parser.add_argument("-q", "--quiet", dest="progress", action="store_const", const="quiet",
                        help="no progress output (= --progress quiet); the image digest still goes to stdout")
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
    _buildx_conveniences(parser)
    add_refused_flags(parser)
    parser.set_defaults(func=run)


def _buildx_conveniences(parser: argparse.ArgumentParser) -> None:
    """buildx's flags for CI scripts and named contexts (see docs/build.md)."""
    parser.add_argument("--load", action="store_true",
                        help="shorthand for --output type=docker: the image goes to `docker load` (the docker CLI "
                        "in PATH)")
    parser.add_argument("--iidfile", type=Path, metavar="FILE",
                        help="write the image ID (config digest; index digest for several platforms) to FILE")
    parser.add_argument("--metadata-file", dest="metadata_file", type=Path, metavar="FILE",
                        help="write buildx's build metadata (containerimage.digest, ...) to FILE as JSON")
    parser.add_argument("--annotation", dest="annotations", action="append", default=[],
                        metavar="[TYPE[,TYPE][[PLATFORM]]:]K=V",
                        help="add an annotation to the manifest (TYPE manifest, the default), its descriptor "
                        "(manifest-descriptor), the index or its descriptor (index, index-descriptor)")
    parser.add_argument("--pull", action="store_true",
                        help="always resolve base images at their registry: never fall back to the local record "
                        "of an earlier resolution when the registry is unreachable")
    parser.add_argument("--no-cache-filter", dest="no_cache_filter", action="append", default=[], metavar="STAGE",
                        help="do not use the cache for the stages of these names (comma-separated; repeatable)")
    parser.add_argument("--add-host", dest="add_hosts", action="append", default=[], metavar="HOST:IP",
                        help="add a line to every RUN container's /etc/hosts (HOST:IP or HOST=IP; repeatable)")
    parser.add_argument("--ulimit", dest="ulimits", action="append", default=[], metavar="NAME=SOFT[:HARD]",
                        help="an rlimit of every RUN container (nofile, nproc, core, stack, ...; -1 = unlimited)")
    parser.add_argument("--shm-size", dest="shm_size", metavar="SIZE",
                        help="size of every RUN container's /dev/shm (e.g. 128m; default 64m)")
    parser.add_argument("--build-context", dest="build_contexts", action="append", default=[],
                        metavar="NAME=VALUE",
                        help="a named context: NAME=DIR | NAME=docker-image://REF | "
                        "NAME=oci-layout://PATH[:TAG|@DIGEST], used by FROM NAME, COPY --from=NAME and "
                        "RUN --mount from=NAME")
    parser.add_argument("--secret", dest="secrets", action="append", default=[], metavar="id=ID,src=FILE|env=VAR",
                        help="a secret for RUN --mount=type=secret,id=ID (buildx forms: id=ID,src=FILE, "
                        "id=ID,env=VAR, type=file|env); read only by the RUNs that mount it, kept out of "
                        "layers, keys, logs and the state directory (repeatable)")
    parser.add_argument("--ssh", dest="ssh", action="append", default=[], metavar="default|ID[=SOCKET|KEY,...]",
                        help="an ssh agent for RUN --mount=type=ssh: default/ID alone forwards $SSH_AUTH_SOCK, "
                        "ID=SOCKET another agent, ID=KEYFILE[,KEYFILE] keys loaded into a private ssh-agent "
                        "(repeatable)")


def _read_dockerfile(args: argparse.Namespace, context: Path) -> tuple[str, str, Path]:
    if args.file == "-":
        return sys.stdin.read(), "Dockerfile", context
    path = Path(args.file) if args.file else context / "Dockerfile"
    try:
        return path.read_text(encoding="utf-8"), path.name, path.parent
    except FileNotFoundError:
        raise ValueError(f"Dockerfile not found: {path}") from None


def _platforms(values: list[str]) -> tuple[Platform, ...]:
    """``--platform`` values (each a comma-separated list), normalised as containerd does; ``local`` and the
    default are the host's."""
    from lamina.oci import host_platform, parse_platforms

    if not values:
        return (host_platform(),)
    found: list[Platform] = []
    for value in values:
        for item in value.split(","):  # buildx's "local" is the host's platform
            parsed = [host_platform()] if item.strip() == "local" else parse_platforms(item)
            found.extend(p for p in parsed if p not in found)
    return tuple(found)


def _progress_mode(flag: str | None) -> str:
    """``--progress``, else ``$BUILDKIT_PROGRESS`` as buildx reads it, else ``auto``."""
    if flag is not None:
        return flag
    env = os.environ.get("BUILDKIT_PROGRESS", "").strip()
    if env and env not in PROGRESS_MODES:
        raise ValueError(f"BUILDKIT_PROGRESS={env}: expected one of {', '.join(PROGRESS_MODES)}")
    return env or "auto"


def _cache_to(specs: list[str], *, inline: bool) -> tuple[CacheTo, ...]:
    """``--cache-to`` values; ``--build-arg BUILDKIT_INLINE_CACHE=1`` adds ``type=inline``, as buildx does."""
    from lamina.build.cacheopts import parse_cache_to

    exports = [parse_cache_to(spec) for spec in specs]
    if inline and not any(export.type == "inline" for export in exports):
        exports.append(parse_cache_to("type=inline"))
    return tuple(exports)


def run(args: argparse.Namespace) -> int:
    with collector_paused():  # the builder's modules (and asyncio): nothing to collect yet, see lamina.gcpause
        import lamina.build.builder  # noqa: F401
    import asyncio  # here, not at the top: `lamina build --help` and flag errors need no event loop

    from lamina.build.annotations import parse_annotations
    from lamina.build.builder import BuildRequest, build
    from lamina.build.buildmeta import check_iidfile, remove_stale, with_load, write_build_metadata
    from lamina.build.builtinargs import BuildArgRefused, builtin_args
    from lamina.build.cacheopts import parse_cache_from
    from lamina.build.entitlements import parse_allow
    from lamina.build.exporter import parse_output
    from lamina.build.namedcontexts import parse_build_contexts, parse_stage_filter
    from lamina.build.progress import make_progress
    from lamina.build.runextras import parse_run_extras
    from lamina.build.secrets import parse_secret, parse_ssh

    try:
        check_refused_flags(args)
        build_args, builtin = builtin_args(dict(args.build_args), os.environ)  # BUILDKIT_*, SOURCE_DATE_EPOCH
        context = Path(args.context)
        if not context.is_dir():
            raise ValueError(f"build context {context} is not a directory")
        dockerfile, name, dockerfile_dir = _read_dockerfile(args, context)
        if args.file != "-" and (dockerfile_dir / f"{name}.rego").is_file():  # buildx loads it as a build policy
            raise RefusedFlag(f"{dockerfile_dir / name}.rego: lamina evaluates no build policies (buildx's "
                              "Dockerfile.rego); move the file away to build without it")
        request = BuildRequest(
            context_dir=context.resolve(),
            dockerfile=dockerfile,
            dockerfile_name=name,
            dockerfile_dir=dockerfile_dir.resolve(),
            tags=tuple(args.tags),
            build_args=build_args,
            target=args.target,
            platforms=_platforms(args.platforms),
            push=args.push,
            # type=cacheonly (buildx): build into the local state and any --cache-to, export no image, which
            # is what a build without an output does
            outputs=with_load([parse_output(o) for o in args.outputs if o.strip() != "type=cacheonly"], args.load),
            no_cache=args.no_cache,
            labels=dict(args.labels),
            root=args.root,
            network=args.network,
            allow=parse_allow(args.allow),
            runtime=args.runtime,
            source_date_epoch=builtin.source_date_epoch,
            compression=args.compression,
            cache_from=tuple(parse_cache_from(c) for c in args.cache_from),
            cache_to=_cache_to(args.cache_to, inline=builtin.inline_cache),
            annotations=parse_annotations(args.annotations),
            pull=args.pull,
            no_cache_filter=parse_stage_filter(args.no_cache_filter),
            named_contexts=parse_build_contexts(args.build_contexts),
            run_extras=parse_run_extras(args.add_hosts, args.ulimits, args.shm_size, builtin.hostname),
            secrets=tuple(parse_secret(s) for s in args.secrets),
            ssh=tuple(parse_ssh(s) for s in args.ssh),
        )
        if request.push and not request.tags:
            raise ValueError("--push needs at least one -t REF")
        check_iidfile(args.iidfile, request.outputs, push=request.push)
        remove_stale(args.iidfile)
        progress = make_progress(_progress_mode(args.progress))
        if request.tags and not request.push and not request.outputs:  # buildx's docker-container driver warns too
            progress.message(f"WARNING: no output for -t {', '.join(request.tags)}: lamina has no image store, so "
                             "the image is kept in the state directory only; use --push, --load or --output to "
                             "export it")
        try:
            result = asyncio.run(build(request, progress))
        finally:
            progress.close()
        write_build_metadata(request, result, iidfile=args.iidfile, metadata_file=args.metadata_file)
    except KeyboardInterrupt:
        raise
    except (RefusedFlag, BuildArgRefused) as exc:  # a flag lamina does not implement: a usage error, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # every failure is one clear line, exit 1
        message = str(exc) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    if args.explain_cache:
        from lamina.build.explain import explain_table

        print(explain_table(result.steps), file=sys.stderr)
    if not any(output.get("dest") == "-" for output in request.outputs):  # stdout carries that tarball alone
        print(result.digest)
    return 0
