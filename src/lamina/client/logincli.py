"""``lamina login`` and ``lamina logout``: docker's login flow, for CI steps and people alike.

``aws ecr get-login-password | lamina login -u AWS --password-stdin ACCOUNT.dkr.ecr.REGION.amazonaws.com``
checks the credentials with ``GET /v2/`` (answering the registry's Basic or Bearer challenge, as docker
login does) and only then saves them through :class:`~lamina.client.credentials_write.DockerConfig`,
where ``lamina build`` (and docker, podman, skopeo, buildx) find them. Plain HTTP follows the builder's
rule: loopback registries and ``$LAMINA_INSECURE_REGISTRIES``. Messages and exit statuses are docker's:
``Login Succeeded``; ``Removing login credentials for HOST`` (exit 0 even when nothing was stored).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from .credentials import CredentialError, Credentials, registry_host, server_key

__all__ = ["configure_login", "configure_logout"]

PASSWORD_WARNING = "WARNING! Using --password via the CLI is insecure. Use --password-stdin."


class LoginError(Exception):
    """A login that cannot go on; the message is the CLI's one line."""


def configure_login(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("registry", metavar="REGISTRY",
                        help="registry host[:port] (docker.io for Docker Hub; a URL is reduced to its host)")
    parser.add_argument("-u", "--username", help="user name (prompted for on a terminal when missing)")
    parser.add_argument("-p", "--password", help="password or token (insecure: it shows in the process list)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password or token from stdin (one trailing newline is dropped)")
    parser.set_defaults(func=run_login)


def configure_logout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("registry", metavar="REGISTRY", help="registry host[:port] (docker.io for Docker Hub)")
    parser.set_defaults(func=run_logout)


def parse_registry(text: str) -> str:
    """``REGISTRY`` as the user typed it -> the host it names (``https://h:5000/v2/`` -> ``h:5000``)."""
    host = registry_host(text.strip())
    if not host or any(c.isspace() for c in host) or "@" in host:
        raise LoginError(f"invalid registry {text!r}: expected HOST[:PORT], e.g. ghcr.io or 127.0.0.1:5000")
    return host


def read_credentials(args: argparse.Namespace, host: str, stdin: TextIO, stderr: TextIO) -> tuple[str, str]:
    """User and password from the flags, stdin or a terminal prompt, with docker's rules and warning."""
    password: str | None = args.password
    if password is not None:
        print(PASSWORD_WARNING, file=stderr)
        if args.password_stdin:
            raise LoginError("--password and --password-stdin are mutually exclusive: use one")
    if args.password_stdin:
        if not args.username:
            raise LoginError("--password-stdin needs --username (-u USER)")
        password = stdin.read()
        password = password.removesuffix("\n").removesuffix("\r")
        if not password:
            raise LoginError(f"--password-stdin: stdin was empty; pipe the password or token for {host} into it")
    username: str | None = args.username
    if not username or password is None:
        if not stdin.isatty():
            missing = "username (-u USER)" if not username else "password (--password-stdin)"
            raise LoginError(f"no {missing} for {host} and stdin is not a terminal to ask for it; "
                             f"e.g. echo \"$TOKEN\" | lamina login -u USER --password-stdin {host}")
        username, password = _prompt(username, password)
    if not username:
        raise LoginError(f"an empty username for {host}: pass -u USER")
    if not password:
        raise LoginError(f"an empty password for {host}: pass it with --password-stdin")
    return username, password


def _prompt(username: str | None, password: str | None) -> tuple[str, str]:
    import getpass

    if not username:
        username = input("Username: ").strip()
    if password is None:
        password = getpass.getpass("Password: ")
    return username, password


async def verify(host: str, credentials: Credentials) -> None:
    """``GET /v2/`` with ``credentials`` (Basic, or the Bearer token they buy); raises RegistryError."""
    from .client import RegistryClient

    async with RegistryClient(host, credentials=credentials) as client:
        await client.ping()


def run_login(args: argparse.Namespace) -> int:
    import asyncio

    from .credentials_write import DockerConfig
    from .errors import RegistryError

    try:
        host = parse_registry(args.registry)
        config = DockerConfig()  # a config.json we could not rewrite fails here, before the password is read
        username, password = read_credentials(args, host, sys.stdin, sys.stderr)
        try:
            asyncio.run(verify(host, Credentials(username, password)))
        except RegistryError as exc:
            raise LoginError(f"login to {host} failed: {exc}") from None
        config.store(host, username, password)
    except (LoginError, CredentialError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("Login Succeeded")
    return 0


def run_logout(args: argparse.Namespace) -> int:
    from .credentials_write import DockerConfig

    try:
        host = parse_registry(args.registry)
        config = DockerConfig()
        print(f"Removing login credentials for {server_key(host)}")
        warning = config.erase(host)
    except (LoginError, CredentialError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if warning:
        print(f"WARNING: could not erase credentials: {warning}", file=sys.stderr)
    return 0
