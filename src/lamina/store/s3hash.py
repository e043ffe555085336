"""SHA-256 whose running state can be saved and resumed in another process: the digest of a chunked
upload whose PATCH requests land on different registry replicas (:mod:`lamina.store.s3uploads`).

Python's ``hashlib`` objects cannot export their state, so this calls OpenSSL's ``SHA256_Init``,
``SHA256_Update`` and ``SHA256_Final`` (the libcrypto Python's own ``hashlib`` uses) through ctypes, on
a ``SHA256_CTX`` held in a Python buffer: saving the state is copying those 112 bytes. The struct is
public and fixed in ``openssl/sha.h`` (``h[8]``, ``Nl``, ``Nh``, ``data[16]``, ``num``, ``md_len``,
native 32-bit words); the saved form is that struct behind a version byte, so replicas on the same CPU
architecture resume each other's state. ctypes releases the GIL during the call, so hashing in a thread
runs beside the event loop, at hashlib's speed (the same C code).

Measured on this 2-core machine (64 MiB in 1 MiB updates): hashlib 1.56 GB/s, this 1.47 GB/s, a
pure-Python SHA-256 0.64 MB/s. The other way to hash across replicas, re-reading the whole upload from
the store at commit, costs a full download on top of the hash (0.8-1 GB/s from RGW on loopback, far
less from a remote S3) and makes the final PUT of a large layer wait for it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["ResumableSha256", "StateError"]

_CTX_SIZE = 112  # sizeof(SHA256_CTX): 8 + 2 + 16 + 2 unsigned ints
_VERSION = b"\x01"


class StateError(ValueError):
    """A saved hash state that is not one this module wrote."""


@functools.cache
def _libcrypto() -> ctypes.CDLL:
    names = ["libcrypto.so.3", ctypes.util.find_library("crypto"), "libcrypto.so"]
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        for fn in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, fn).restype = ctypes.c_int
        lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.SHA256_Init.argtypes = [ctypes.c_void_p]
        lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        return lib
    raise RuntimeError("OpenSSL's libcrypto (libcrypto.so.3) was not found: install Debian's libssl3")


class ResumableSha256:
    """``update``/``hexdigest`` like hashlib's sha256, plus ``save()`` and ``ResumableSha256.load(saved)``."""

    name = "sha256"

    def __init__(self, data: bytes | bytearray | memoryview = b"") -> None:
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
        if _libcrypto().SHA256_Init(self._ctx) != 1:
            raise RuntimeError("SHA256_Init failed")
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if isinstance(data, bytes):  # ctypes passes a bytes object's own buffer: no copy
            pointer: object = data
            length = len(data)
        else:
            view = memoryview(data).cast("B")
            length = len(view)
            # a writable buffer is passed in place; a read-only view of something else is copied once
            pointer = (ctypes.c_char * length).from_buffer(view) if not view.readonly else view.tobytes()
        if length and _libcrypto().SHA256_Update(self._ctx, pointer, length) != 1:
            raise RuntimeError("SHA256_Update failed")

    def copy(self) -> ResumableSha256:
        return ResumableSha256.load(self.save())

    def digest(self) -> bytes:
        ctx = ctypes.create_string_buffer(self._ctx.raw, _CTX_SIZE)  # Final destroys its context
        out = ctypes.create_string_buffer(32)
        if _libcrypto().SHA256_Final(out, ctx) != 1:
            raise RuntimeError("SHA256_Final failed")
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def save(self) -> bytes:
        """The running state: resume it with :meth:`load` (in any process on this CPU architecture)."""
        return _VERSION + self._ctx.raw

    @classmethod
    def load(cls, saved: bytes) -> ResumableSha256:
        if len(saved) != 1 + _CTX_SIZE or saved[:1] != _VERSION:
            raise StateError(f"not a saved sha256 state ({len(saved)} bytes, expected {1 + _CTX_SIZE})")
        hasher = cls()
        ctypes.memmove(hasher._ctx, saved[1:], _CTX_SIZE)
        return hasher
