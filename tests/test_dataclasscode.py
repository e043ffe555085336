"""lamina.dataclasscode: dataclass methods compiled once per installation and reused by later processes.

What must hold: a class made with the kept code behaves and introspects exactly as one made without it
(this module has ``from __future__ import annotations``, so an inherited compile flag would show up as
string annotations on ``__init__``); a second process compiles nothing; a damaged file is replaced; no
file when Python writes no bytecode, unless asked (the bootstrap's ``python -m lamina.dataclasscode``);
and ``dataclasses`` is left as it was found.
"""

from __future__ import annotations

import dataclasses
import inspect
import marshal
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lamina import dataclasscode
from lamina.dataclasscode import cache_path, cached_dataclass_code

_CLASSES = """
import dataclasses
from dataclasses import InitVar, dataclass, field

@dataclass(frozen=True, slots=True)
class Ref:
    \"\"\"A frozen, slotted record.\"\"\"
    digest: str
    size: int = 0
    tags: tuple[str, ...] = ()

@dataclass
class Mutable:
    \"\"\"Defaults, a factory, an InitVar, keyword-only and ordering.\"\"\"
    name: str
    items: list[int] = field(default_factory=list)
    scale: InitVar[int] = 1
    label: str = field(default="x", kw_only=True)
    def __post_init__(self, scale: int) -> None:
        self.items = [i * scale for i in self.items]

@dataclass(order=True, unsafe_hash=True)
class Ordered:
    \"\"\"Comparison and an explicit hash.\"\"\"
    a: int
    b: str = "b"
"""


def _make(cache: Path | None) -> dict[str, type]:
    namespace: dict[str, object] = {"__name__": "made"}
    if cache is None:
        exec(compile(_CLASSES, "made", "exec", dont_inherit=True), namespace)
    else:
        with cached_dataclass_code(cache, write=True):
            exec(compile(_CLASSES, "made", "exec", dont_inherit=True), namespace)
    return {name: namespace[name] for name in ("Ref", "Mutable", "Ordered")}  # type: ignore[misc]


def _describe(classes: dict[str, type]) -> list[object]:
    """Everything observable of the generated methods: signatures, annotations, behaviour, errors."""
    ref, mutable, ordered = classes["Ref"], classes["Mutable"], classes["Ordered"]
    out: list[object] = []
    for cls in classes.values():
        for method in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__lt__"):
            fn = cls.__dict__.get(method)
            if callable(fn):
                annotations = {k: repr(v) for k, v in getattr(fn, "__annotations__", {}).items()}
                out.append((cls.__name__, method, str(inspect.signature(fn)), annotations, fn.__qualname__,
                            fn.__code__.co_code))
    r = ref("sha256:1", 3)
    out += [repr(r), r == ref("sha256:1", 3), hash(r) == hash(ref("sha256:1", 3)), ref.__slots__]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.size = 4  # type: ignore[misc]
    m = mutable("n", [1, 2], 3, label="y")
    out += [repr(m), m.items, mutable("n") == mutable("n", []), mutable.__hash__]
    with pytest.raises(TypeError):
        mutable("n", [], 1, "positional label")  # type: ignore[misc]
    out += [ordered(1) < ordered(2), repr(sorted([ordered(2), ordered(1, "a")])), hash(ordered(1)) == hash(ordered(1))]
    return out


def test_classes_made_with_kept_code_are_the_same_as_without(tmp_path: Path) -> None:
    cache = tmp_path / "code.marshal"
    plain = _describe(_make(None))
    assert _describe(_make(cache)) == plain  # compiled now and kept
    assert cache.is_file()
    assert _describe(_make(cache)) == plain  # from the file
    assert "exec" not in vars(dataclasses)


def test_a_second_process_compiles_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "code.marshal"
    _make(cache)
    before = cache.read_bytes()
    with cached_dataclass_code(cache, write=True):
        exec(compile(_CLASSES, "made", "exec", dont_inherit=True), {"__name__": "again"})
        active = dataclasscode._active
        assert active is not None
        assert active.compiled == 0
        assert len(active.used) >= 10
    assert cache.read_bytes() == before  # nothing new: not rewritten


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-a-dict", "bad-entry"])
def test_a_damaged_file_is_compiled_again_and_replaced(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "code.marshal"
    _make(cache)
    good = marshal.loads(cache.read_bytes())
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: len(cache.read_bytes()) // 2])
    elif damage == "garbage":
        cache.write_bytes(os.urandom(4096))
    elif damage == "not-a-dict":
        cache.write_bytes(marshal.dumps([1, 2, 3]))
    else:
        cache.write_bytes(marshal.dumps({text: b"\x00broken" for text in good}))
    assert _describe(_make(cache)) == _describe(_make(None))
    assert marshal.loads(cache.read_bytes()).keys() == good.keys()


def test_no_file_when_python_writes_no_bytecode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    cache = tmp_path / "code.marshal"
    with cached_dataclass_code(cache):
        exec(compile(_CLASSES, "made", "exec", dont_inherit=True), {"__name__": "x"})
    assert not cache.exists()
    with cached_dataclass_code(cache, write=True):  # what the bootstrap asks for, as compileall does
        exec(compile(_CLASSES, "made", "exec", dont_inherit=True), {"__name__": "x"})
    assert cache.is_file()


def test_a_read_only_location_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert _describe(_make(blocker / "sub" / "code.marshal")) == _describe(_make(None))


def test_nested_blocks_and_dataclasses_restored(tmp_path: Path) -> None:
    with cached_dataclass_code(tmp_path / "a"):
        with cached_dataclass_code(tmp_path / "b"):  # a no-op: the outer block's cache stays active
            exec(compile(_CLASSES, "made", "exec", dont_inherit=True), {"__name__": "x"})
        assert vars(dataclasses)["exec"] is dataclasscode._exec
    assert "exec" not in vars(dataclasses)
    assert not (tmp_path / "b").exists()


def test_the_lamina_process_and_the_bootstrap_write_it_beside_the_bytecode(tmp_path: Path) -> None:
    """``lamina`` (main() without argv) keeps the methods its start-up compiled; the bootstrap's
    ``python -m lamina.dataclasscode`` writes all of lamina's even under PYTHONDONTWRITEBYTECODE."""
    prefix = tmp_path / "pycache"
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(prefix)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    locate = "from lamina.dataclasscode import cache_path; print(cache_path())"
    path = Path(subprocess.run([sys.executable, "-c", locate], env=env, capture_output=True, text=True,
                               check=True).stdout.strip())
    assert prefix in path.parents
    missing = tmp_path / "no-such-context"  # fails after the builder is imported, before any work
    subprocess.run([sys.executable, "-m", "lamina.cli", "build", str(missing)], env=env, capture_output=True)
    first = marshal.loads(path.read_bytes())
    assert any("def __init__" in text for text in first)
    path.unlink()
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-m", "lamina.dataclasscode"], env=env, capture_output=True, text=True,
                          check=True)
    assert str(path) in done.stdout
    everything = marshal.loads(path.read_bytes())
    assert len(everything) > len(first)
    script = textwrap.dedent("""
        import sys
        from lamina import dataclasscode
        with dataclasscode.cached_dataclass_code():
            import lamina.build.builder, lamina.registry.cli
            print(dataclasscode._active.compiled, len(dataclasscode._active.used))
    """)
    compiled, used = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()
    assert (int(compiled), int(used) > 100) == (0, True)


def test_cache_path_names_the_bytecode_version() -> None:
    from importlib._bootstrap_external import MAGIC_NUMBER  # type: ignore[import-not-found]

    assert MAGIC_NUMBER.hex() in cache_path().name
    assert sys.implementation.cache_tag in cache_path().name
