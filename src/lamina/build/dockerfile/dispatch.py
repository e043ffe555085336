"""Apply one instruction to a stage being converted: its config changes and the step it yields.

Semantics follow BuildKit's dockerfile2llb dispatchers: which instructions expand variables (ADD COPY
ENV EXPOSE LABEL STOPSIGNAL USER VOLUME WORKDIR, ARG defaults; never RUN/CMD/ENTRYPOINT/HEALTHCHECK),
the environment a step sees (image Env plus the stage's ARGs, later definitions replacing earlier
ones), SHELL wrapping of shell forms, and the exact ``created_by`` history text.
"""

from __future__ import annotations

import re
import signal
from typing import TYPE_CHECKING, Any

from lamina.build.ops import RunStep, WorkdirStep

from .copy import copy_step
from .errors import DockerfileError
from .golang import go_duration, go_quote_list, parse_go_duration
from .lex import ExpansionError, Lexer
from .parse import Instruction, flag_str, parse_flags, parse_heredoc
from .paths import normalize_workdir
from .state import DEFAULT_SHELL, Context, StageState, as_written

if TYPE_CHECKING:
    from lamina.build.mounts import RunMount

__all__ = ["dispatch", "onbuild_expression"]

_MIN_DURATION = 1_000_000  # Docker's container.MinimumDuration: 1ms
_WITH_FLAGS = ("RUN", "COPY", "ADD", "HEALTHCHECK")


def dispatch(st: StageState, inst: Instruction, ctx: Context) -> None:
    handler = _HANDLERS.get(inst.cmd)
    if handler is None:
        raise DockerfileError(f"{inst.cmd} is not allowed inside a stage", inst.line)
    if inst.flags and inst.cmd not in _WITH_FLAGS:
        parse_flags(inst)  # BuildKit rejects any flag on an instruction that defines none
    try:
        handler(st, inst, ctx)
    except ExpansionError as exc:
        raise DockerfileError(f"{inst.cmd}: {exc}", inst.line) from None


def _pairs(inst: Instruction) -> list[tuple[str, str]]:
    if not inst.args:
        raise DockerfileError(f"{inst.cmd} requires at least one argument", inst.line)
    if len(inst.args) % 2:
        raise DockerfileError(f"Bad input to {inst.cmd}, too many arguments", inst.line)
    pairs = list(zip(inst.args[::2], inst.args[1::2], strict=True))
    if any(not k for k, _ in pairs):
        raise DockerfileError(f"{inst.cmd} names can not be blank", inst.line)
    return pairs


def _one_arg(inst: Instruction) -> str:
    if len(inst.args) != 1:
        raise DockerfileError(f"{inst.cmd} requires exactly one argument", inst.line)
    return inst.args[0]


def _set_env(config: dict[str, Any], key: str, value: str) -> None:
    env = list(config.get("Env") or [])
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env[i] = f"{key}={value}"
            break
    else:
        env.append(f"{key}={value}")
    config["Env"] = env


def _env(st: StageState, inst: Instruction, ctx: Context) -> None:
    expanded = [(st.expand(ctx, k), st.expand(ctx, v)) for k, v in _pairs(inst)]
    for key, value in expanded:
        st.env[key] = value
        _set_env(st.config, key, value)
    st.meta(inst, "ENV " + " ".join(f"{k}={v}" for k, v in expanded))


def _label(st: StageState, inst: Instruction, ctx: Context) -> None:
    expanded = [(st.expand(ctx, k), st.expand(ctx, v)) for k, v in _pairs(inst)]
    labels = dict(st.config.get("Labels") or {})
    labels.update(expanded)
    st.config["Labels"] = labels
    st.meta(inst, "LABEL " + " ".join(f"{k}={v}" for k, v in expanded))


def _arg(st: StageState, inst: Instruction, ctx: Context) -> None:
    if not inst.args:
        raise DockerfileError("ARG requires at least one argument", inst.line)
    texts = []
    for raw in inst.args:
        key, has_default, default = raw.partition("=")
        if not key:
            raise DockerfileError("ARG names can not be blank", inst.line)
        ctx.declared.add(key)
        value: str | None = None
        if key in ctx.build_args:
            value = ctx.build_args[key]
        elif has_default:
            value = st.expand(ctx, default)
        elif key in ctx.global_args:
            value = ctx.global_args[key]
        if value is not None:
            st.env[key] = value
        st.build_args.append((key, value))
        texts.append(key if value is None else f"{key}={value}")
    st.meta(inst, "ARG " + " ".join(texts))


def _shell(st: StageState) -> list[str]:
    return list(st.config.get("Shell") or DEFAULT_SHELL)


def _cmdline(st: StageState, inst: Instruction) -> list[str]:
    if inst.json:
        return list(inst.args)
    return [*_shell(st), " ".join(inst.args)]


def _run_history(st: StageState, argv: list[str]) -> str:
    """BuildKit's runCommandString: ``|N K=V ...`` for the stage's ARGs, then the command."""
    seen: dict[str, str] = {}
    for key, value in st.build_args:
        seen[key] = st.env.get(key, value or "")
    prefix = [f"|{len(seen)}", *(f"{k}={v}" for k, v in seen.items())] if seen else []
    return "RUN " + " ".join([*prefix, *argv]) + " # buildkit"


def _run(st: StageState, inst: Instruction, ctx: Context) -> None:
    flags = parse_flags(inst, strings=("network", "security"), lists=("mount", "device"))
    if flags["device"]:
        raise DockerfileError("RUN --device is not supported by lamina", inst.line)
    mounts: tuple[RunMount, ...] = ()
    ssh_sock: str | None = None
    if flags["mount"]:  # the --mount parser and the mount types are loaded for a RUN that has mounts only
        from .runmount import run_mounts, ssh_auth_sock

        mounts = run_mounts(st, inst, ctx, flags["mount"])  # type: ignore[arg-type]
        ssh_sock = ssh_auth_sock(mounts)
    security = flag_str(flags, "security") or "sandbox"
    if security not in ("sandbox", "insecure"):
        raise DockerfileError(f"RUN: unsupported security mode {security!r} (sandbox, insecure)", inst.line)
    network = flag_str(flags, "network") or "default"
    if network not in ("default", "none", "host"):
        raise DockerfileError(f"RUN: unsupported network mode {network!r} (default, none, host)", inst.line)
    if not inst.args:
        raise DockerfileError("RUN requires at least one argument", inst.line)
    args = list(inst.args)
    inline: tuple[tuple[str, str], ...] = ()
    if inst.heredocs:
        if len(args) != 1 or inst.json:
            raise DockerfileError(f"parsing produced an invalid run command: {args}", inst.line)
        if parse_heredoc(args[0]) is not None:
            first = inst.heredocs[0]
            data = first.text
            if data.startswith("#!"):
                path = f"/dev/pipes/{first.name}"
                inline = ((path, data),)
                args = [path]
            else:
                args = [data]
        else:
            args = [args[0] + "".join(f"\n{doc.content}{doc.name}" for doc in inst.heredocs)]
    argv = args if inst.json else [*_shell(st), " ".join(args)]
    env = dict(st.env)
    if ssh_sock is not None and "SSH_AUTH_SOCK" not in env:  # LLB's exec op points it at the first socket
        env["SSH_AUTH_SOCK"] = ssh_sock
    st.steps.append(
        RunStep(
            argv=tuple(argv),
            env=tuple(f"{k}={v}" for k, v in env.items()),
            user=st.config.get("User") or "",
            workdir=st.config.get("WorkingDir") or "/",
            network=network,
            security=security,
            proxy_env=ctx.proxy_env,
            inline_files=inline,
            mounts=mounts,
            line=inst.line,
            created_by=_run_history(st, argv),
            shown=as_written(inst),
        )
    )


def _cmd(st: StageState, inst: Instruction, ctx: Context) -> None:
    args = _cmdline(st, inst)
    st.config["Cmd"] = args
    st.config["ArgsEscaped"] = True
    st.cmd_set = True
    st.meta(inst, "CMD " + go_quote_list(args))


def _entrypoint(st: StageState, inst: Instruction, ctx: Context) -> None:
    args: list[str] | None = _cmdline(st, inst)
    if inst.json and not args:
        args = None
    st.config["Entrypoint"] = args
    if not st.cmd_set:
        st.config["Cmd"] = None
    st.meta(inst, "ENTRYPOINT " + go_quote_list(args))


def _duration(inst: Instruction, name: str, text: str) -> int:
    if not text:
        return 0
    try:
        value = parse_go_duration(text)
    except ValueError as exc:
        raise DockerfileError(f"HEALTHCHECK --{name}: {exc}", inst.line) from None
    if value and value < _MIN_DURATION:
        raise DockerfileError(f'HEALTHCHECK: Interval "{name}" cannot be less than 1ms', inst.line)
    return value


def _healthcheck(st: StageState, inst: Instruction, ctx: Context) -> None:
    if not inst.args:
        raise DockerfileError("HEALTHCHECK requires at least one argument", inst.line)
    kind = inst.args[0].upper()
    health: dict[str, Any]
    if kind == "NONE":
        if len(inst.args) != 1:
            raise DockerfileError("HEALTHCHECK NONE takes no arguments", inst.line)
        if inst.flags:  # BuildKit parses no flag for NONE and drops them; lamina refuses instead
            raise DockerfileError(f"HEALTHCHECK NONE takes no flags ({' '.join(inst.flags)}): they belong to "
                                  "HEALTHCHECK CMD; remove them", inst.line)
        health = {"Test": ["NONE"]}
    elif kind == "CMD":
        names = ("interval", "timeout", "start-period", "start-interval", "retries")
        flags = parse_flags(inst, strings=names)
        command = list(inst.args[1:])
        if not command or command == [""]:
            raise DockerfileError("Missing command after HEALTHCHECK CMD", inst.line)
        health = {"Test": ["CMD" if inst.json else "CMD-SHELL", *command]}
        for name, key in zip(names[:4], ("Interval", "Timeout", "StartPeriod", "StartInterval"), strict=True):
            health[key] = _duration(inst, name, flag_str(flags, name))
        retries_text = flag_str(flags, "retries")
        try:
            retries = int(retries_text) if retries_text else 0
        except ValueError:
            raise DockerfileError(f"HEALTHCHECK --retries: invalid number {retries_text!r}", inst.line) from None
        if retries < 0:
            raise DockerfileError(f"--retries cannot be negative ({retries})", inst.line)
        health["Retries"] = retries
    else:
        raise DockerfileError(f'Unknown type "{kind}" in HEALTHCHECK (try CMD)', inst.line)
    text = (
        f"{{Test:[{' '.join(health['Test'])}] Interval:{go_duration(health.get('Interval', 0))} "
        f"Timeout:{go_duration(health.get('Timeout', 0))} StartPeriod:{go_duration(health.get('StartPeriod', 0))} "
        f"StartInterval:{go_duration(health.get('StartInterval', 0))} Retries:{health.get('Retries', 0)}}}"
    )
    st.config["Healthcheck"] = {k: v for k, v in health.items() if v or k == "Test"}
    st.meta(inst, "HEALTHCHECK " + text)


def _port_range(text: str) -> tuple[int, int]:
    start_text, dash, end_text = text.partition("-")
    if not start_text.isdigit() or (dash and not end_text.isdigit()):
        raise ValueError(text)
    start = int(start_text)
    end = int(end_text) if dash else start
    if start > 65535 or end > 65535 or end < start:
        raise ValueError(text)
    return start, end


def _expose(st: StageState, inst: Instruction, ctx: Context) -> None:
    if not inst.args:
        raise DockerfileError("EXPOSE requires at least one argument", inst.line)
    ports: list[str] = []
    for raw in sorted(inst.args):
        for spec in Lexer(escape=ctx.escape).process(raw, st.env)[1]:
            container = spec.split(":")[-1]
            port, _, proto = container.partition("/")
            proto = proto.lower() or "tcp"
            if proto not in ("tcp", "udp", "sctp"):
                raise DockerfileError(f"EXPOSE {spec}: invalid proto: {proto}", inst.line)
            try:
                start, end = _port_range(port)
            except ValueError:
                raise DockerfileError(f"EXPOSE {spec}: invalid containerPort: {port}", inst.line) from None
            ports.extend(f"{p}/{proto}" for p in range(start, end + 1))
    exposed = dict(st.config.get("ExposedPorts") or {})
    exposed.update({p: {} for p in ports})
    st.config["ExposedPorts"] = exposed
    st.meta(inst, "EXPOSE [" + " ".join(ports) + "]")


def _user(st: StageState, inst: Instruction, ctx: Context) -> None:
    user = st.expand(ctx, _one_arg(inst))
    st.config["User"] = user
    st.meta(inst, f"USER {user}")


def _volume(st: StageState, inst: Instruction, ctx: Context) -> None:
    if not inst.args:
        raise DockerfileError("VOLUME requires at least one argument", inst.line)
    volumes = [st.expand(ctx, v).strip() for v in inst.args]
    if any(not v for v in volumes):
        raise DockerfileError("VOLUME specified can not be an empty string", inst.line)
    merged = dict(st.config.get("Volumes") or {})
    merged.update({v: {} for v in volumes})
    st.config["Volumes"] = merged
    st.meta(inst, "VOLUME [" + " ".join(volumes) + "]")


_SIGNALS = {s.name.removeprefix("SIG") for s in signal.Signals}
_RT_SIGNAL = re.compile(r"^RT(MIN|MAX)([+-]\d+)?$")


def _stopsignal(st: StageState, inst: Instruction, ctx: Context) -> None:
    sig = st.expand(ctx, _one_arg(inst))
    name = sig.upper().removeprefix("SIG")
    valid = (sig.isdigit() and int(sig) > 0) or name in _SIGNALS or bool(_RT_SIGNAL.match(name))
    if not valid:
        raise DockerfileError(f"STOPSIGNAL: invalid signal: {sig}", inst.line)
    st.config["StopSignal"] = sig
    st.meta(inst, f"STOPSIGNAL {sig}")


def _shell_inst(st: StageState, inst: Instruction, ctx: Context) -> None:
    if not inst.json:
        raise DockerfileError(f'SHELL requires the arguments to be in JSON form: "{inst.original}"', inst.line)
    if not inst.args:
        raise DockerfileError("SHELL requires at least one argument", inst.line)
    st.config["Shell"] = list(inst.args)
    st.meta(inst, "SHELL [" + " ".join(inst.args) + "]")


def _workdir(st: StageState, inst: Instruction, ctx: Context) -> None:
    requested = st.expand(ctx, _one_arg(inst))
    if not requested:
        raise DockerfileError("WORKDIR: cannot normalize nothing", inst.line)
    path = normalize_workdir(st.config.get("WorkingDir") or "", requested)
    st.config["WorkingDir"] = path
    if path == "/":
        st.meta(inst, "WORKDIR /")
        return
    user = st.config.get("User") or ""
    st.steps.append(WorkdirStep(path=path, user=user, line=inst.line, created_by=f"WORKDIR {path}",
                                shown=as_written(inst)))


def _maintainer(st: StageState, inst: Instruction, ctx: Context) -> None:
    st.author = _one_arg(inst)
    ctx.warnings.append(f"Dockerfile:{inst.line}: MAINTAINER is deprecated, use LABEL org.opencontainers.image.authors")
    st.meta(inst, f"MAINTAINER {st.author}")


_ONBUILD_PREFIX = re.compile(r"(?i)^\s*ONBUILD\s*")


def onbuild_expression(inst: Instruction) -> str:
    """The trigger text ONBUILD stores in the image config (the line without ``ONBUILD``)."""
    if not inst.sub:
        raise DockerfileError("ONBUILD requires at least one argument", inst.line)
    if inst.sub == "ONBUILD":
        raise DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", inst.line)
    if inst.sub in ("MAINTAINER", "FROM"):
        raise DockerfileError(f"{inst.sub} isn't allowed as an ONBUILD trigger", inst.line)
    return _ONBUILD_PREFIX.sub("", inst.original, count=1)


def _onbuild(st: StageState, inst: Instruction, ctx: Context) -> None:
    st.config["OnBuild"] = [*(st.config.get("OnBuild") or []), onbuild_expression(inst)]


def _copy(st: StageState, inst: Instruction, ctx: Context) -> None:
    st.steps.append(copy_step(st, inst, ctx))


_HANDLERS = {
    "ENV": _env,
    "LABEL": _label,
    "ARG": _arg,
    "RUN": _run,
    "CMD": _cmd,
    "ENTRYPOINT": _entrypoint,
    "HEALTHCHECK": _healthcheck,
    "EXPOSE": _expose,
    "USER": _user,
    "VOLUME": _volume,
    "STOPSIGNAL": _stopsignal,
    "SHELL": _shell_inst,
    "WORKDIR": _workdir,
    "MAINTAINER": _maintainer,
    "ONBUILD": _onbuild,
    "COPY": _copy,
    "ADD": _copy,
}
