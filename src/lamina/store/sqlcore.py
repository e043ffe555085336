"""What the SQL metadata store's logic needs from a database driver: four primitives.

The logic (:mod:`.sqlrequests`, :mod:`.sqlmaintenance`) is written once against these; each backend
(:mod:`.sqlite`, :mod:`.postgres`) implements them over its driver's own connection objects, which both
answer ``conn.execute(sql, params)`` with a DB-API cursor, so a statement costs one driver call.

- :meth:`SqlCore._fetch`: one read statement outside any transaction (atomic on its own);
- :meth:`SqlCore._transaction`: a write transaction around a ``with`` body, committed when it ends,
  rolled back when it raises; :meth:`SqlCore._write` runs ``fn(conn)`` in one and runs it again (a few
  times) when the database aborted it to break a deadlock or a serialization conflict (``retry_errors``).
  ``gate`` and ``keys`` say which locks the transaction takes first:
  ``gate="shared"`` for writers that check something garbage collection removes (a manifest PUT's
  references, an upload's file), ``gate="exclusive"`` for garbage collection and fsck's repairs, and
  ``keys`` for per-name locks (a tag being moved, a repository's upload-session count). SQLite's
  ``BEGIN IMMEDIATE`` already serialises every writer, so there these cost nothing; PostgreSQL takes
  advisory locks (see :mod:`.postgres`);
- :meth:`SqlCore._snapshot`: ``fn(conn)`` in a read-only transaction that sees one instant;
- :meth:`SqlCore._exec_many`: one statement over many parameter sets inside a transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, TypeVar

from lamina.oci import Digest

from .base import StoreError
from .statements import Compiled, Statements

__all__ = ["Gate", "SqlCore", "digest_of"]

T = TypeVar("T")
Gate = Literal["shared", "exclusive"] | None


def digest_of(text: str) -> Digest:
    """A digest this store wrote from a parsed Digest (no need to validate it again)."""
    algorithm, _, encoded = text.partition(":")
    return Digest(algorithm, encoded)


class SqlCore(ABC):
    """The primitives every backend provides; ``sql`` holds its dialect's compiled statements."""

    sql: Statements
    pull_granularity: float
    integrity_errors: tuple[type[Exception], ...] = ()  # the driver's unique/foreign-key violations
    retry_errors: tuple[type[Exception], ...] = ()  # aborted to break a deadlock or serialization conflict
    attempts = 5

    @abstractmethod
    def _fetch(self, query: Compiled, **values: Any) -> list[Any]:
        ...

    @abstractmethod
    def _transaction(self, *, gate: Gate = None, keys: Sequence[str] = ()) -> AbstractContextManager[Any]:
        ...

    def _write(self, fn: Callable[[Any], T], *, gate: Gate = None, keys: Sequence[str] = ()) -> T:
        for attempt in range(self.attempts):
            try:
                with self._transaction(gate=gate, keys=keys) as conn:
                    return fn(conn)
            except self.retry_errors as exc:
                if attempt == self.attempts - 1:
                    raise StoreError(f"metadata database {self.describe()}: {exc}") from exc
        raise AssertionError("unreachable: attempts >= 1")

    @abstractmethod
    def _snapshot(self, fn: Callable[[Any], T]) -> T:
        ...

    @abstractmethod
    def _exec_many(self, conn: Any, query: Compiled, rows: list[Any]) -> None:
        ...

    @abstractmethod
    def describe(self) -> str:
        """How error messages name this database (a path, or a URL without its password)."""
        ...

    # -- conveniences over the primitives -----------------------------------------------------------

    def _fetch_one(self, query: Compiled, **values: Any) -> Any:
        rows = self._fetch(query, **values)
        return rows[0] if rows else None

    @staticmethod
    def _exec(conn: Any, query: Compiled, **values: Any) -> Any:
        """One statement on a transaction's connection; the driver's cursor."""
        return conn.execute(query.sql, query.bind(**values))

    def _limit(self, limit: int | None) -> int | None:
        return self.sql.no_limit if limit is None else max(0, limit)
