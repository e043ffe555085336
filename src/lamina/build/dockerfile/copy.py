"""COPY and ADD: flags, sources (context paths, URLs, inline heredoc files), ``--from`` and the destination.

Follows BuildKit: sources, destination, ``--chown`` and ``--checksum`` are expanded; ``--from`` is not
(it names a stage, by name or index, or else an image); a heredoc body is expanded (without quote
removal) unless its delimiter was quoted; the destination is resolved against WORKDIR keeping a
trailing ``/``; the history text lists the flags and sources as BuildKit writes them.
"""

from __future__ import annotations

import re

from lamina.build.filecopy.git import parse_git_source
from lamina.build.filecopy.modes import ChmodError, parse_chmod
from lamina.build.ops import CopyStep
from lamina.oci import DigestError, ReferenceError, parse_digest, parse_reference

from .errors import DockerfileError
from .lex import Lexer
from .named import dir_context_for, image_context_ref
from .parse import Instruction, flag_str, parse_flags, parse_heredoc
from .paths import normalize_dest
from .state import Context, StageState, as_written

__all__ = ["copy_step", "from_reference"]

_COMMIT_PREFIX = re.compile(r"^[0-9a-f]{1,40}$")


def from_reference(inst: Instruction, value: str, ctx: Context, current: int) -> tuple[int | None, str | None]:
    """``--from`` as (stage index, None) or (None, image ref); stages must come earlier."""
    if Lexer(escape=ctx.escape).process(value, {})[0] != value:
        raise DockerfileError(
            "variable expansion is not supported for --from, define a new stage with FROM using ARG "
            "from global scope as a workaround",
            inst.line,
        )
    if value.isdigit():
        index = int(value)
        if index >= ctx.stage_count:
            raise DockerfileError(f"{inst.cmd} --from={value}: invalid stage index {index}", inst.line)
    elif value.lower() in ctx.stage_index:
        index = ctx.stage_index[value.lower()]
    else:
        replaced = image_context_ref(ctx.contexts, value, None)  # --build-context NAME=docker-image://...
        if replaced is not None:
            return None, replaced
        try:
            parse_reference(value)
        except ReferenceError as exc:
            names = ", ".join(sorted(ctx.stage_index)) or "none"
            raise DockerfileError(
                f"{inst.cmd} --from={value}: no such stage (stages: {names}) and not an image reference: {exc}",
                inst.line,
            ) from None
        return None, value
    if index >= current:
        raise DockerfileError(
            f"cannot copy from stage {value!r}, it needs to be defined before the current stage", inst.line
        )
    return index, None


def _check_chmod(inst: Instruction, chmod: str) -> None:
    try:
        parse_chmod(chmod)
    except ChmodError as exc:
        raise DockerfileError(f"{inst.cmd} {exc}", inst.line) from None


def _links(link: bool, chmod: str | None, chown: str | None) -> bool:
    """Whether BuildKit merges this COPY as a link layer: ``--link`` without ``--chmod`` (its frontend:
    ``cfg.link && cfg.chmod == ""``). Lamina also keeps a ``--chown`` by *name* on the base, since the
    name is looked up in the image's /etc/passwd, which a layer made on an empty root cannot see."""
    if not link or chmod:
        return False
    user, _, group = (chown or "").partition(":")
    return all(part.isdigit() for part in (user, group) if part)


def copy_step(st: StageState, inst: Instruction, ctx: Context) -> CopyStep:
    is_add = inst.cmd == "ADD"
    if is_add:
        flags = parse_flags(
            inst, strings=("chown", "chmod", "checksum"), bools=("link", "keep-git-dir", "unpack"), lists=("exclude",)
        )
    else:
        flags = parse_flags(inst, strings=("from", "chown", "chmod"), bools=("link", "parents"), lists=("exclude",))
    if len(inst.args) < 2:
        raise DockerfileError(
            f"{inst.cmd} requires at least two arguments, but only one was provided. "
            "Destination could not be determined",
            inst.line,
        )
    *sources, dest = inst.args
    if not inst.json and parse_heredoc(dest) is not None:
        raise DockerfileError(f"{inst.cmd} cannot accept a heredoc as a destination", inst.line)
    docs = {doc.name: doc for doc in inst.heredocs}
    paths: list[str] = []
    inline: list[tuple[str, str]] = []
    for src in sources:
        spec = None if inst.json else parse_heredoc(src)
        if spec is None:
            paths.append(st.expand(ctx, src))
            continue
        name, _, _ = spec
        doc = docs.get(name)
        if doc is None:
            raise DockerfileError(f"{inst.cmd}: heredoc <<{name} has no body", inst.line)
        text = doc.text
        if doc.expand:
            text = Lexer(skip_quotes=True).process(text, st.env)[0]
        inline.append((name, text))
    dest = st.expand(ctx, dest)
    chown = st.expand(ctx, flag_str(flags, "chown")) or None
    chmod = flag_str(flags, "chmod") or None  # BuildKit expands --chown and --checksum, not --chmod
    if chmod is not None:
        _check_chmod(inst, chmod)
    from_stage, from_image = None, None
    source = flag_str(flags, "from")
    from_context = dir_context_for(ctx.contexts, source, st.platform) if source else None
    if source and from_context is None:
        from_stage, from_image = from_reference(inst, source, ctx, st.index)
        if from_stage is None:  # an image: a --build-context NAME::PLATFORM, then NAME, stands in for it
            from_image = image_context_ref(ctx.contexts, source, st.platform) or from_image
    for src in paths:
        if not is_add and (src.startswith("http://") or src.startswith("https://")):
            raise DockerfileError(f"COPY {src}: source can't be a URL for COPY", inst.line)
    gits = [src for src in paths if is_add and parse_git_source(src) is not None]
    if flags.get("keep-git-dir") and not gits:
        raise DockerfileError("ADD --keep-git-dir needs a git repository source (https://host/x.git#ref, "
                              "git@host:x.git)", inst.line)
    if gits and len(paths) + len(inline) > 1:
        raise DockerfileError(f"ADD {gits[0]}: a git repository must be the only source of its ADD", inst.line)
    checksum = st.expand(ctx, flag_str(flags, "checksum")) or None
    if checksum is not None:
        if len(paths) != 1 or inline:
            raise DockerfileError("ADD --checksum can't be specified for multiple sources", inst.line)
        if gits:  # BuildKit: the commit hash, in full or a prefix of it
            if not _COMMIT_PREFIX.match(checksum):
                raise DockerfileError(f"ADD --checksum={checksum}: for a git repository it is the commit hash "
                                      "(or a prefix of it)", inst.line)
        elif not paths[0].startswith(("http://", "https://")):
            raise DockerfileError("ADD --checksum requires an HTTP(S) or git source", inst.line)
        else:
            try:
                parse_digest(checksum)
            except DigestError as exc:
                raise DockerfileError(f"ADD --checksum={checksum}: {exc}", inst.line) from None
    unpack = flags.get("unpack")
    if unpack is not None and gits:
        raise DockerfileError(f"ADD --unpack with a git repository ({gits[0]}): a repository is never an archive",
                              inst.line)
    exclude = flags.get("exclude") or []
    assert isinstance(exclude, list)
    words = [inst.cmd]  # BuildKit's history text: --parents, --chown, --chmod; never --link or --exclude
    if flags.get("parents"):
        words.append("--parents")
    if chown:
        words.append(f"--chown={chown}")
    if chmod:
        words.append(f"--chmod={chmod}")
    words.extend(paths)
    words.extend(f"<<{name}" for name, _ in inline)
    words.append(dest)
    return CopyStep(
        sources=tuple(paths),
        dest=normalize_dest(st.config.get("WorkingDir") or "/", dest),
        from_stage=from_stage,
        from_image=from_image,
        from_context=from_context,
        chown=chown,
        chmod=chmod,
        link=_links(bool(flags.get("link")), chmod, chown),
        parents=bool(flags.get("parents")),
        is_add=is_add,
        keep_git_dir=bool(flags.get("keep-git-dir")),
        unpack=unpack if isinstance(unpack, bool) else None,
        heredocs=tuple(inline),
        exclude=tuple(exclude),
        checksum=checksum,
        user=st.config.get("User") or "",
        workdir=st.config.get("WorkingDir") or "/",
        line=inst.line,
        created_by=" ".join(words) + " # buildkit",
        shown=as_written(inst),
    )
