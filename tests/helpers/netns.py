"""Network fixtures the sandbox tests build themselves: a "remote host" in its own network namespace, joined
to the host by a veth pair (so a RUN can fetch from it through the user-mode stack without the internet), and
an HTTP server on the host's loopback that counts who reached it."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoopbackServer", "RemoteHost", "lamina_namespaces", "loopback_server", "remote_host", "slirp_children"]


@dataclass(frozen=True)
class RemoteHost:
    address: str  # the remote side of the veth pair, e.g. 10.213.7.2
    port: int

    def url(self, name: str) -> str:
        return f"http://{self.address}:{self.port}/{name}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def remote_host(files: dict[str, str], tmp_path: Path) -> Iterator[RemoteHost]:
    """A namespace ``lamtest-*`` with ``files`` served over HTTP at 10.213.X.2:8080, routed from the host."""
    token = os.urandom(3).hex()
    name, host_if, peer_if = f"lamtest-{token}", f"lt{token}h", f"lt{token}r"
    subnet = int(token[:2], 16)
    host_addr, remote_addr = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    root = tmp_path / f"remote-{token}"
    root.mkdir()
    for path, content in files.items():
        (root / path).write_text(content)
    _ip("netns", "add", name)
    server: subprocess.Popen[bytes] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", name)
        _ip("addr", "add", f"{host_addr}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{remote_addr}/24", "dev", peer_if)
        _ip("-n", name, "link", "set", peer_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "http.server", "-d", str(root), "-b", remote_addr,
             "8080"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_listening(remote_addr, 8080, server)
        yield RemoteHost(remote_addr, 8080)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        _ip("netns", "delete", name)


def _wait_listening(address: str, port: int, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the remote host's HTTP server exited with {server.returncode}")
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the remote host's HTTP server did not listen on {address}:{port}")


class LoopbackServer:
    """An HTTP server on the host's 127.0.0.1 answering ``host-secret``; ``hits`` counts the requests."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                body = b"host-secret\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    try:
        yield server
    finally:
        server.close()


def lamina_namespaces() -> list[str]:
    """This process's sandbox namespaces still in /run/netns (none once every RUN has finished)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith(f"lamina-{os.getpid()}-")]


def slirp_children() -> list[int]:
    """PIDs of slirp4netns processes whose parent is this process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if comm == "slirp4netns" and ppid == os.getpid():
            found.append(int(entry))
    return found
