"""Dockerfile -> BuildGraph: stages, ARG scoping, base configs, ONBUILD triggers, pruning to the target.

The order follows BuildKit's dockerfile2llb: the ARGs before the first FROM (plus the automatic
platform ARGs) form the global scope, usable only in FROM lines and imported into a stage by a bare
``ARG name``; ``--build-arg`` overrides declared ARGs; the target (default: the last stage) pulls in,
transitively, the stages it builds on (``FROM <stage>``) and copies from (``COPY --from``), including
through ONBUILD triggers of base images, which run right after FROM. Each stage starts from its base
image's config (fetched through ``resolve_base``), an earlier stage's final state, or scratch.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.build.builtinargs import BUILTIN_ARGS
from lamina.build.namedcontexts import DirContext, NamedContext
from lamina.build.ops import BaseImage, BuildGraph, Scratch, Stage, StageBase
from lamina.oci import (
    ContainerConfig,
    FormatError,
    ImageConfig,
    Platform,
    format_platform,
    host_platform,
    normalize_platform,
    parse_platform,
)

from .checks import check_directive
from .dispatch import dispatch, onbuild_expression
from .errors import DockerfileError, suggest
from .lex import ExpansionError, Lexer
from .named import replace_named_stages
from .parse import Dockerfile, Instruction, flag_str, parse, parse_flags, parse_trigger
from .state import DEFAULT_PATH, Context, StageState
from .syntax import check_syntax

__all__ = ["PLATFORM_ARGS", "PROXY_ARGS", "ResolveBase", "convert", "host_platform"]

ResolveBase = Callable[[str, Platform], ImageConfig]

PROXY_ARGS = ("HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY")
PLATFORM_ARGS = (
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
)
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


@dataclass
class _Stage:
    """A stage while it is converted: its FROM line resolved, its instructions not dispatched yet."""

    index: int
    name: str | None
    base: BaseImage | Scratch | StageBase
    platform: Platform
    line: int
    commands: list[Instruction]
    base_config: ImageConfig | None = None
    triggers: list[Instruction] = field(default_factory=list)


def convert(
    dockerfile: str | Dockerfile,
    *,
    resolve_base: ResolveBase,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
    platform: Platform | str | None = None,
    build_platform: Platform | str | None = None,
    named_contexts: Mapping[str, NamedContext] | None = None,
) -> BuildGraph:
    """Turn a Dockerfile into the graph the solver runs; raises DockerfileError naming the line."""
    df = dockerfile if isinstance(dockerfile, Dockerfile) else parse(dockerfile)
    args = dict(build_args or {})
    frontend_note = check_syntax(df.directives.get("syntax"), args.get("BUILDKIT_SYNTAX"))  # before all else
    # no build checks run: refuse what asks for them (the build arg replaces the directive, as in BuildKit)
    check_directive(args.get("BUILDKIT_DOCKERFILE_CHECK") or df.directives.get("check"),
                    "--build-arg BUILDKIT_DOCKERFILE_CHECK" if args.get("BUILDKIT_DOCKERFILE_CHECK") else "# check")
    target_platform = _platform(platform) if platform else host_platform()
    builder_platform = _platform(build_platform) if build_platform else host_platform()
    meta, grouped = _split(df)
    global_args = _platform_args(builder_platform, target_platform, args)
    declared: set[str] = set()
    lexer = Lexer(escape=df.escape)
    for inst in meta:
        parse_flags(inst)  # ARG defines no flag: BuildKit rejects any
        for raw in inst.args:
            key, has_default, default = raw.partition("=")
            if not key:
                raise DockerfileError("ARG names can not be blank", inst.line)
            declared.add(key)
            if key in args:
                global_args[key] = args[key]
            elif has_default:
                global_args[key] = _expand(lexer, default, global_args, inst)
    stages: list[_Stage] = []
    names: dict[str, int] = {}
    for index, (from_inst, commands) in enumerate(grouped):
        stage = _stage(index, from_inst, commands, lexer, global_args, names, target_platform)
        if stage.name is not None:
            names[stage.name] = index
        stages.append(stage)
    contexts = dict(named_contexts or {})
    replace_named_stages(stages, contexts)
    ctx = Context(df.escape, global_args, args, _proxy_env(args), names, len(stages), declared, contexts=contexts,
                  named_contexts={k: v for k, v in contexts.items() if isinstance(v, DirContext)})
    if frontend_note:
        ctx.warnings.append(frontend_note)
    target_index = _target(target, names, len(stages))
    needed = _resolve(stages, target_index, ctx, resolve_base)
    states: dict[int, StageState] = {}
    out: list[Stage] = []
    for stage in stages:
        if stage.index in needed:
            out.append(_dispatch_stage(stage, states, ctx))
    unused = [k for k in args if k not in ctx.declared and not _predefined(k)]
    if unused:
        ctx.warnings.append(f"one or more build-args [{' '.join(unused)}] were not consumed")
    return BuildGraph(stages=tuple(out), target=target_index, warnings=tuple(ctx.warnings))


def _predefined(name: str) -> bool:
    """Build args BuildKit consumes without an ARG: proxies, platform ARGs, its built-in ones (BUILDKIT_SYNTAX,
    SOURCE_DATE_EPOCH, ...: :mod:`lamina.build.builtinargs`); another BUILDKIT_* name is an ordinary arg."""
    return name.upper() in PROXY_ARGS or name in PLATFORM_ARGS or name in BUILTIN_ARGS


def _platform(value: Platform | str) -> Platform:
    """A platform normalised as BuildKit's frontend does (containerd's platforms.Parse + Normalize)."""
    return normalize_platform(value) if isinstance(value, Platform) else parse_platform(value)


def _platform_args(build: Platform, target: Platform, overrides: Mapping[str, str]) -> dict[str, str]:
    values = {
        "BUILDPLATFORM": format_platform(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant or "",
        "TARGETPLATFORM": format_platform(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant or "",
    }
    return {k: overrides.get(k, v) for k, v in values.items()}


def _proxy_env(args: Mapping[str, str]) -> tuple[str, ...]:
    """Proxy build args as BuildKit passes them to RUN: both spellings, in a fixed order."""
    out: list[str] = []
    for name in PROXY_ARGS:
        value = None
        for key in sorted(args):
            if key.upper() == name:
                value = args[key]
        if value is not None:
            out.extend((f"{name}={value}", f"{name.lower()}={value}"))
    return tuple(out)


def _expand(lexer: Lexer, word: str, env: Mapping[str, str], inst: Instruction) -> str:
    try:
        return lexer.process(word, env)[0]
    except ExpansionError as exc:
        raise DockerfileError(f"{inst.cmd}: {exc}", inst.line) from None


def _split(df: Dockerfile) -> tuple[list[Instruction], list[tuple[Instruction, list[Instruction]]]]:
    meta: list[Instruction] = []
    grouped: list[tuple[Instruction, list[Instruction]]] = []
    for inst in df.instructions:
        if inst.cmd == "FROM":
            grouped.append((inst, []))
        elif grouped:
            grouped[-1][1].append(inst)
        elif inst.cmd == "ARG":
            meta.append(inst)
        else:
            raise DockerfileError(f"{inst.cmd} before the first FROM: no build stage in current context", inst.line)
    if not grouped:
        raise DockerfileError("dockerfile contains no stages to build")
    return meta, grouped


def _stage(
    index: int,
    inst: Instruction,
    commands: list[Instruction],
    lexer: Lexer,
    global_args: Mapping[str, str],
    names: Mapping[str, int],
    target_platform: Platform,
) -> _Stage:
    flags = parse_flags(inst, strings=("platform",))
    if not inst.args:
        raise DockerfileError("FROM requires either one or three arguments (FROM image [AS name])", inst.line)
    name = None
    if len(inst.args) == 3 and inst.args[1].lower() == "as":
        name = inst.args[2].lower()
        if not _STAGE_NAME.match(name):
            raise DockerfileError(
                f"invalid name for build stage: {inst.args[2]!r}, name can't start with a number or contain symbols",
                inst.line,
            )
        if name in names:
            raise DockerfileError(f"duplicate stage name {name!r}", inst.line)
    elif len(inst.args) != 1:
        raise DockerfileError("FROM requires either one or three arguments (FROM image [AS name])", inst.line)
    base_name = _expand(lexer, inst.args[0], global_args, inst)
    if not base_name:
        raise DockerfileError(f"base name ({inst.args[0]}) should not be blank", inst.line)
    plat = target_platform
    if flag_str(flags, "platform"):
        text = _expand(lexer, flag_str(flags, "platform"), global_args, inst)
        if not text:
            raise DockerfileError(f"empty platform value from expression {flag_str(flags, 'platform')}", inst.line)
        try:
            plat = _platform(text)
        except FormatError as exc:
            raise DockerfileError(f"FROM --platform: {exc}", inst.line) from None
    base: BaseImage | Scratch | StageBase
    if base_name.lower() == "scratch":
        base = Scratch()
    elif base_name in names:
        base = StageBase(names[base_name])
    else:
        base = BaseImage(base_name)
    return _Stage(index, name, base, plat, inst.line, commands)


def _target(target: str | None, names: Mapping[str, int], count: int) -> int:
    if not target:
        return count - 1
    if target.lower() in names:
        return names[target.lower()]
    listed = ", ".join(names) or "no named stages"
    raise DockerfileError(f"target stage {target!r} could not be found{suggest(target, names)} (stages: {listed})")


def _mount_froms(flags: tuple[str, ...]) -> list[str]:
    """A RUN's ``--mount`` ``from=`` values as ``--from=`` flags (the mount parser loads for mounts only)."""
    if not any(flag.startswith("--mount=") for flag in flags):
        return []
    from .runmount import mount_froms

    return [f"--from={value}" for value in mount_froms(flags)]


def _deps(stage: _Stage, ctx: Context) -> set[int]:
    out: set[int] = set()
    if isinstance(stage.base, StageBase):
        out.add(stage.base.stage)
    for inst in (*stage.triggers, *stage.commands):
        if inst.cmd not in ("COPY", "RUN"):
            continue
        for raw in inst.flags if inst.cmd == "COPY" else _mount_froms(inst.flags):
            if raw.startswith("--from="):
                value = raw[len("--from=") :]
                if value.isdigit() and int(value) < stage.index:
                    out.add(int(value))
                elif value in ctx.named_contexts or value.lower() in ctx.named_contexts:
                    continue  # a directory context (replacing that stage, if one has the name): files, no stage
                elif value.lower() in ctx.stage_index and ctx.stage_index[value.lower()] < stage.index:
                    out.add(ctx.stage_index[value.lower()])
    return out


def _closure(stages: list[_Stage], target: int, ctx: Context) -> set[int]:
    seen: set[int] = set()
    todo = [target]
    while todo:
        index = todo.pop()
        if index not in seen:
            seen.add(index)
            todo.extend(_deps(stages[index], ctx))
    return seen


def _resolve(stages: list[_Stage], target: int, ctx: Context, resolve_base: ResolveBase) -> set[int]:
    """The stages the target needs; resolves their base configs and ONBUILD triggers (which may add needs)."""
    resolved: set[int] = set()
    while True:
        needed = _closure(stages, target, ctx)
        pending = sorted(needed - resolved)
        if not pending:
            return needed
        for index in pending:
            resolved.add(index)
            stage = stages[index]
            triggers: list[str] = []
            if isinstance(stage.base, BaseImage):
                try:
                    stage.base_config = resolve_base(stage.base.ref, stage.platform)
                except Exception as exc:
                    raise DockerfileError(f"FROM {stage.base.ref}: {exc}", stage.line) from exc
                triggers = list(stage.base_config.config.get("OnBuild") or [])
            elif isinstance(stage.base, StageBase):
                base = stages[stage.base.stage]
                triggers = [onbuild_expression(i) for i in base.commands if i.cmd == "ONBUILD"]
            stage.triggers = [parse_trigger(text, stage.line) for text in triggers]


def _dispatch_stage(stage: _Stage, states: dict[int, StageState], ctx: Context) -> Stage:
    plat = stage.platform
    env: dict[str, str] = {}
    build_args: list[tuple[str, str | None]] = []
    if isinstance(stage.base, StageBase):
        parent = states[stage.base.stage]
        config = copy.deepcopy(parent.config)
        env = dict(parent.env)
        build_args = list(parent.build_args)
        plat = parent.platform
    elif isinstance(stage.base, BaseImage):
        assert stage.base_config is not None
        config = copy.deepcopy(stage.base_config.config.values)
    else:
        config = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"}
    config.pop("OnBuild", None)
    config_env = list(config.get("Env") or [])
    if not any(item.partition("=")[0] == "PATH" for item in config_env):
        config_env.append(f"PATH={DEFAULT_PATH}")
    config["Env"] = config_env
    for item in config_env:
        key, _, value = item.partition("=")
        env[key] = value
    st = StageState(stage.index, plat, config, env, build_args)
    for inst in (*stage.triggers, *stage.commands):
        dispatch(st, inst, ctx)
    states[stage.index] = st
    values = {k: v for k, v in st.config.items() if v is not None}
    return Stage(
        index=stage.index,
        name=stage.name,
        base=stage.base,
        platform=plat,
        steps=tuple(st.steps),
        config=ContainerConfig(values),
        line=stage.line,
        author=st.author,
    )
