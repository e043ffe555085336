"""``lamina registry serve``: option parsing, pre-flight checks and the worker processes.

N worker processes each bind the port with SO_REUSEPORT (the kernel spreads connections between
them) and open their own storage after the fork; worker 0 alone runs the upload janitor. Problems a
user can fix (bad option, unwritable root, port in use) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import socket
import sys
import traceback
from pathlib import Path

from .config import ConfigError, RegistryConfig, load_config

__all__ = ["configure"]


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", help="serve the OCI distribution API", description=__doc__)
    serve.add_argument("--listen", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:5000)")
    serve.add_argument("--root", metavar="DIR",
                       help="data directory (default $LAMINA_REGISTRY_ROOT, else ./lamina-data)")
    serve.add_argument("--workers", type=int, metavar="N", help="worker processes (default: CPU count)")
    serve.add_argument("--config", type=Path, metavar="FILE", help="settings file (TOML, or YAML if *.yaml/*.yml)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this PEM chain (and --tls-key)")
    serve.add_argument("--tls-key", metavar="FILE", help="the certificate's PEM private key (unencrypted)")
    serve.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    serve.set_defaults(func=serve_command)
    from .opscli import add_ops_commands

    add_ops_commands(sub)


def _fail(message: str) -> int:
    print(f"lamina registry: {message}", file=sys.stderr)
    return 2


def _check_root(root: Path) -> str | None:
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)  # open_storage tightens an older, wider root
        probe = root / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"root {root} is not writable: {exc.strerror or exc}"
    return None


def _check_port(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # SO_REUSEADDR (ignore TIME_WAIT) but not SO_REUSEPORT: a bind must fail when anyone listens
            # there, including another lamina whose workers would otherwise silently share the port.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return f"cannot listen on {host}:{port}: the port is already in use"
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def serve_command(args: argparse.Namespace) -> int:
    # Whatever this process and its workers write (SQLite's temp files, metrics, the auth key's
    # directory) is for the registry's owner only; lamina.store sets its own files' modes explicitly too.
    os.umask(0o077)
    try:
        overrides = {"listen": args.listen, "root": args.root, "workers": args.workers}
        overrides |= {"tls_cert": args.tls_cert, "tls_key": args.tls_key}
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    problem = _check_root(config.root) or _check_port(config.host, config.port) or _check_tls(config)
    problem = problem or _check_metadata(config)
    if problem:
        return _fail(problem)
    import logging

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .ops import configure_access_log, exposure_warning
    from .tls import cleartext_warning

    warnings = (exposure_warning(config.host, config.ops),
                cleartext_warning(config.host, config.tls_cert is not None, config.ops.auth is not None))
    for warning in filter(None, warnings):
        print(f"lamina registry: {warning}", file=sys.stderr, flush=True)
        logging.getLogger("lamina.registry").warning(warning)
    if config.ops.access_log:
        configure_access_log()
    if config.ops.auth is not None:
        from .auth.audit import configure_audit_log

        configure_audit_log()  # one bare JSON line per refused request, whatever the log level
    from .metricsdir import prepare_metrics_directory

    prepare_metrics_directory(config.root)  # the workers' shared metrics, before prometheus_client is imported
    scheme, skopeo_tls = ("http", "--dest-tls-verify=false")
    if config.tls_cert is not None:
        scheme, skopeo_tls = ("https", "--dest-cert-dir DIR-WITH-ca.crt")
    print(
        f"lamina registry listening on {scheme}://{config.listen} (root {config.root.resolve()}, "
        f"{config.workers} worker{'s' if config.workers != 1 else ''}); push with: "
        f"skopeo copy {skopeo_tls} oci-archive:image.tar docker://{config.listen}/myimage:latest",
        flush=True,
    )
    if config.workers == 1:
        return _run_worker(config)
    return _supervise(config)


def _check_metadata(config: RegistryConfig) -> str | None:
    """A PostgreSQL ``metadata`` database answers and is migrated, before any worker starts."""
    if config.metadata is None:
        return None
    from lamina.store import StoreError
    from lamina.store.postgres import PostgresMetadataStore

    try:
        PostgresMetadataStore(config.metadata).create_schema()
    except StoreError as exc:
        return str(exc)
    return None


def _check_tls(config: RegistryConfig) -> str | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    from .tls import CertificateReloader, TlsError

    try:
        CertificateReloader(config.tls_cert, config.tls_key)  # read, checked and loaded as a worker will
    except TlsError as exc:
        return str(exc)
    return None


def _run_worker(config: RegistryConfig) -> int:
    import ssl

    import uvloop

    from .app import create_app
    from .httpserver import serve

    app = create_app(config)
    ssl_context: ssl.SSLContext | None = None
    if config.tls_cert is not None and config.tls_key is not None:  # each worker loads and watches its own
        from .tls import CertificateReloader, TlsError, attach_reloader

        try:
            reloader = CertificateReloader(config.tls_cert, config.tls_key)
        except TlsError as exc:  # the files changed for the worse since the check at start
            return _fail(str(exc))
        attach_reloader(app, reloader, config.tls_reload_seconds)
        ssl_context = reloader.context
    loop = uvloop.new_event_loop()  # aiohttp's run_app, with malformed requests answered in JSON (httpserver)
    serve(app, host=config.host, port=config.port, ssl_context=ssl_context, loop=loop, backlog=1024,
          shutdown_timeout=5.0)
    return 0


def _supervise(config: RegistryConfig) -> int:
    """Fork the workers, forward SIGINT/SIGTERM to them, exit when they have all gone."""
    import dataclasses

    from . import app  # noqa: F401 - import once before forking: workers share the loaded modules
    from .metricsdir import worker_exited

    children: list[int] = []
    for index in range(config.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _run_worker(dataclasses.replace(config, run_janitor=index == 0))
            except KeyboardInterrupt:
                code = 0
            except BaseException:  # os._exit below would swallow the traceback: print it first
                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    remaining = set(children)
    while remaining:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        remaining.discard(pid)
        worker_exited(pid)  # its per-process gauges leave /metrics; its counters stay in the sums
        code = os.waitstatus_to_exitcode(wait_status)
        if code not in (0, -signal.SIGTERM, -signal.SIGINT):
            status = 1
            forward(signal.SIGTERM, None)
    return status
