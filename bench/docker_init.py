"""The ``docker init`` projects of issue 9 built, pushed and run: Python, Node and Go (``bench/corpus/docker-init-*``).

Each project is the Dockerfile ``docker init`` writes for its language (cache mounts for the package
manager, the lock files bound instead of copied, an unprivileged user, EXPOSE, CMD/ENTRYPOINT), on a
Debian bookworm base made with debootstrap (``bench/_debian.py``) in place of Docker Hub's images. The base
here carries **no** extra CA: PyPI and npm are reached through whatever TLS-inspecting proxy the host
trusts, so the host's CA bundle comes into the dependency step as a build secret (``--secret
id=proxy-ca,src=/etc/ssl/certs/ca-certificates.crt``) that pip's and npm's configuration, themselves
secrets (``pipconf`` mounted at /etc/pip.conf, ``npmrc`` at /root/.npmrc), point at, as a user with a
private index's token would pass it. The Go project cross-compiles in a ``FROM --platform=$BUILDPLATFORM``
stage with Debian's golang-go (``GOARCH=$TARGETARCH``, no module dependencies: no Go proxy is needed) into a
Debian final stage (apt, adduser), built for ``linux/amd64,linux/arm64``: the base is an index of an amd64 and
an arm64 debootstrap tree, and the final stage's RUNs run under QEMU for arm64.

Per project, every build a fresh ``lamina build`` process against a lamina registry on loopback:

- ``cold``: empty state, ``--cache-to type=registry,...,mode=max``, image pushed;
- ``run``: the pushed image (each platform of it) copied out with ``skopeo``, unpacked with ``umoci`` and
  run with ``runc`` (arm64 through the kernel's binfmt_misc QEMU); an HTTP GET from inside the container's
  network namespace (``nsenter``) must get the app's answer, the app must run as the image's unprivileged
  user, and the secrets' files must be in no layer; after all builds, a random token in the secrets must be in
  no build's output and no file of the states, the registry or the unpacked images;
- ``cached``: another empty state with ``--cache-from`` the cold build's cache: every step must be cached;
- ``dependency`` (Python, Node): the project's ``.dependency.patch`` applied, built on the cold build's
  state, then again on an empty state with ``--cache-from`` the cold build's cache (whose export carries the
  cache mounts' contents): both times pip (``Using cached``) and npm (``cache hit``/``revalidated``/
  ``updated``/``stale``) must find the packages of the cold build in the cache mount. The Python project
  depends on docopt, published as an sdist only: pip builds its wheel and keeps it in the cache, whatever
  caching headers the index sends (a proxy that strips them leaves pip's HTTP cache of downloaded wheels
  empty, so those are fetched again).

Prints a line per build and a table of the times. Needs root, runc, skopeo, umoci, nsenter, ip, QEMU's
binfmt_misc formats (``scripts/setup-emulation.sh``; debootstrap's arm64 second stage needs them too) and
the network to deb.debian.org, PyPI and npm.

    sudo .venv/bin/python bench/docker_init.py [--projects python,node,go] [--rootfs DIR] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _debian import DEFAULT_ROOTFS, debian_rootfs, push_debian_index
from ci_scenarios import _steps
from helpers.registries import start_lamina

CORPUS = Path(__file__).resolve().parent / "corpus"
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# pip and npm configuration, passed as secrets; proxy-ca is mounted at /run/secrets/proxy-ca.
# Each begins with a comment holding the session's random token, as a private index's token would be
# there: the token must be in no layer, no state or registry file and no log line.
PIP_CONF = "# {token}\n[global]\ncert = /run/secrets/proxy-ca\n"
NPMRC = "# {token}\ncafile=/run/secrets/proxy-ca\nloglevel=http\n"  # loglevel: npm names each fetch a cache hit or not
_GET = """
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(sys.argv[1], timeout=5) as resp:
    sys.stdout.write(resp.read().decode())
"""


@dataclass(frozen=True)
class Project:
    """One corpus project and what its running image must answer."""

    directory: str
    port: int
    path: str
    answer: str  # a substring of the response body ({arch} = the platform's architecture)
    uid: int  # the unprivileged user the app runs as
    secrets: tuple[str, ...]
    platforms: tuple[str, ...] = ("linux/amd64",)
    reused: tuple[str, ...] = ()  # what the dependency rebuild's log shows for a package found in the cache mount
    fetched: tuple[str, ...] = ()  # what it shows for a package downloaded (reported, not checked)
    cache_target: str = ""  # the package manager's cache mount
    secret_files: tuple[str, ...] = ()  # where the secrets were mounted: must be in no layer


PROJECTS = {
    "python": Project("docker-init-python", 8000, "/healthz", '"status":"ok"', 10001, ("pipconf", "proxy-ca"),
                      reused=("Using cached",), fetched=("Downloading ",), cache_target="/root/.cache/pip",
                      secret_files=("etc/pip.conf", "run/secrets/proxy-ca")),
    "node": Project("docker-init-node", 3000, "/healthz", '"status":"ok","user":1000', 1000, ("npmrc", "proxy-ca"),
                    # npm's fetch log: hit, revalidated (304), updated (200 replacing an entry) or stale: it was there
                    reused=("(cache hit)", "(cache revalidated)", "(cache updated)", "(cache stale)"),
                    fetched=("(cache miss)",),
                    cache_target="/root/.npm", secret_files=("root/.npmrc", "run/secrets/proxy-ca")),
    "go": Project("docker-init-go", 8080, "/", "hello from linux/{arch} as uid 10001", 10001, (),
                  platforms=("linux/amd64", "linux/arm64")),
}


@dataclass
class Result:
    """The figures and checks of one project."""

    seconds: dict[str, float] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        (self.checks if ok else self.failures).append(what)
        print(f"    {'ok  ' if ok else 'FAIL'} {what}", file=sys.stderr, flush=True)


class Session:
    """A registry on loopback, the base images, the secret files and a work directory."""

    def __init__(self, work: Path, rootfses: dict[str, Path], logs: Path | None) -> None:
        self.work, self.logs = work, logs
        self.registry = start_lamina(work / "registry")
        self.host = self.registry.host
        self.base = push_debian_index(rootfses, self.host, work, "docker-init/debian:bookworm", host_cas=False)
        self.token = f"lamina-secret-{secrets.token_hex(16)}"
        self.secret_dir = work / "secrets"
        self.secret_dir.mkdir()
        (self.secret_dir / "pip.conf").write_text(PIP_CONF.format(token=self.token))
        (self.secret_dir / "npmrc").write_text(NPMRC.format(token=self.token))
        self.secret_src = {"pipconf": self.secret_dir / "pip.conf", "npmrc": self.secret_dir / "npmrc",
                           "proxy-ca": HOST_BUNDLE}
        self.logged: list[str] = []  # every build's output
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")

    def build(self, name: str, project: Project, context: Path, state: Path, case: str,
              cache: list[str]) -> tuple[subprocess.CompletedProcess[str], float]:
        """One ``lamina build`` process; returns it and its wall time."""
        argv = [sys.executable, "-m", "lamina.cli", "build", "--progress", "plain", "--root", str(state),
                "--build-arg", f"BASE={self.base}",
                "--platform", ",".join(project.platforms), "-t", f"{self.host}/docker-init/{name}:{case}", "--push",
                "--metadata-file", str(self.work / f"{name}-{case}.json"), *cache]
        for secret in project.secrets:
            argv += ["--secret", f"id={secret},src={self.secret_src[secret]}"]
        started = time.perf_counter()
        proc = subprocess.run([*argv, str(context)], env=self.env, capture_output=True, text=True, check=False)
        took = time.perf_counter() - started
        self.logged.append(proc.stderr)
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.logs / f"{name}-{case}.log").write_text(proc.stderr)
        return proc, took

    def digest(self, name: str, case: str) -> str:
        doc = json.loads((self.work / f"{name}-{case}.json").read_text())
        return str(doc.get("containerimage.digest", ""))


def _context(project: Project, dest: Path, change: str | None = None) -> Path:
    """A copy of the corpus project, with ``NAME.<change>.patch`` applied (``patch -p1``)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(CORPUS / project.directory, dest, symlinks=True)
    if change is not None:
        patch = CORPUS / f"{project.directory}.{change}.patch"
        subprocess.run(["patch", "-p1", "--quiet", "--forward", "-d", str(dest), "-i", str(patch)], check=True)
    return dest


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)


def _unpack(ref: str, arch: str, work: Path, tag: str) -> Path:
    """The image of ``arch`` at ``ref`` copied with skopeo into an OCI layout, unpacked by umoci: its bundle."""
    layout, bundle = work / "oci", work / f"bundle-{tag}"
    copied = _run(["skopeo", "copy", "--src-tls-verify=false", "--override-os", "linux", "--override-arch", arch,
                   f"docker://{ref}", f"oci:{layout}:{tag}"], timeout=300)
    if copied.returncode != 0:
        raise RuntimeError(f"skopeo copy {ref} ({arch}) failed: {copied.stderr.strip()[-300:]}")
    shutil.rmtree(bundle, ignore_errors=True)
    unpacked = _run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)], timeout=300)
    if unpacked.returncode != 0:
        raise RuntimeError(f"umoci unpack {ref} ({arch}) failed: {unpacked.stderr.strip()[-300:]}")
    return bundle


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no Uid line")


def run_image(session: Session, name: str, project: Project, platform: str, result: Result) -> None:
    """Run the pushed image of ``platform`` under runc and GET the app from inside its network namespace."""
    arch = platform.split("/")[1]
    ref = f"{session.host}/docker-init/{name}:cold"
    bundle = _unpack(ref, arch, session.work, f"{name}-{arch}")
    for path in project.secret_files:
        result.check(not (bundle / "rootfs" / path).exists(), f"{platform}: secret file /{path} in no layer")
    spec_path = bundle / "config.json"
    spec = json.loads(spec_path.read_text())
    spec["process"]["terminal"] = False
    spec_path.write_text(json.dumps(spec))
    runc = ["runc", "--root", str(session.work / "runc")]
    cid = f"docker-init-{name}-{arch}-{os.getpid()}"
    log_path = session.work / f"{cid}.log"
    with log_path.open("w") as log:
        created = subprocess.run([*runc, "create", "--bundle", str(bundle), cid], stdin=subprocess.DEVNULL,
                                 stdout=log, stderr=log, check=False, timeout=60)
    try:
        if created.returncode != 0:
            result.check(False, f"{platform}: runc create: {log_path.read_text().strip()[-300:]}")
            return
        pid = int(json.loads(_run([*runc, "state", cid]).stdout)["pid"])
        _run(["nsenter", "-t", str(pid), "-n", "ip", "link", "set", "lo", "up"])
        _run([*runc, "start", cid])
        url = f"http://127.0.0.1:{project.port}{project.path}"
        answer, deadline = "", time.monotonic() + 90
        while time.monotonic() < deadline:
            got = _run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", _GET, url], timeout=30)
            if got.returncode == 0:
                answer = got.stdout
                break
            time.sleep(0.5)
        expected = project.answer.format(arch=arch).replace(" ", "")
        shown = answer.strip()[:120] or f"no answer; container output: {log_path.read_text().strip()[-300:]}"
        result.check(expected in answer.replace(" ", ""), f"{platform}: GET {project.path} -> {shown}")
        uid = _uid_of(pid)
        result.check(uid == project.uid, f"{platform}: the app runs as uid {uid} (image's user: {project.uid})")
    finally:
        _run([*runc, "kill", cid, "KILL"])
        _run([*runc, "delete", "--force", cid])


def run_project(session: Session, name: str, project: Project) -> Result:
    """cold, run, cached and dependency for one project (see the module docstring)."""
    result = Result()
    work, host = session.work, session.host
    cache_ref = f"{host}/docker-init/{name}:cache"
    state = work / f"state-{name}"
    context = _context(project, work / f"ctx-{name}")
    proc, took = session.build(name, project, context, state, "cold",
                               ["--cache-to", f"type=registry,ref={cache_ref},mode=max"])
    result.seconds["cold"] = took
    result.check(proc.returncode == 0, f"cold build and push ({took:.1f} s): "
                 + (proc.stderr.strip().splitlines() or ["?"])[-1][:200])
    if proc.returncode != 0:
        return result
    for platform in project.platforms:
        started = time.perf_counter()
        run_image(session, name, project, platform, result)
        result.seconds[f"run {platform.split('/')[1]}"] = time.perf_counter() - started

    proc, took = session.build(name, project, context, work / f"state-{name}-cached", "cached",
                               ["--cache-from", cache_ref])
    result.seconds["cached"] = took
    steps, cached, misses = _steps(proc.stderr)
    result.check(proc.returncode == 0 and steps > 0 and cached == steps,
                 f"--cache-from on an empty state ({took:.1f} s): {cached}/{steps} steps cached {'; '.join(misses)}")
    same = session.digest(name, "cached") == session.digest(name, "cold")
    result.check(proc.returncode == 0 and same, "the cached build pushed the cold build's image digest")
    shutil.rmtree(work / f"state-{name}-cached", ignore_errors=True)

    if project.reused:
        changed = _context(project, work / f"ctx-{name}-dependency", "dependency")
        remote = work / f"state-{name}-remote"
        for case, where, build_state, cache in (("dependency", "same state", state, []),
                                                ("dependency remote", "empty state, --cache-from", remote,
                                                 ["--cache-from", cache_ref])):
            proc, took = session.build(name, project, changed, build_state, case.replace(" ", "-"), cache)
            result.seconds[case] = took
            reused = sum(proc.stderr.count(marker) for marker in project.reused)
            fetched = sum(proc.stderr.count(marker) for marker in project.fetched)
            result.check(proc.returncode == 0 and reused > 0,
                         f"dependency added, {where} ({took:.1f} s): {reused} download(s) found in "
                         f"{project.cache_target}, {fetched} not")
        shutil.rmtree(remote, ignore_errors=True)
    return result


def check_no_leak(session: Session, result: Result) -> None:
    """The secrets' token in no build's output and no file of the session (states, registry, unpacked images)."""
    logged = sum(log.count(session.token) for log in session.logged)
    result.check(logged == 0, f"the secrets' token in no build output ({logged} found)")
    found = _run(["grep", "-r", "-l", "-F", "-a", "--no-messages", session.token, str(session.work)], timeout=600)
    hits = found.stdout.splitlines()
    leaked = [line for line in hits if not line.startswith(f"{session.secret_dir}/")]
    # the secrets' own files are found: the search works
    result.check(len(hits) - len(leaked) == 2 and not leaked,
                 f"the secrets' token in no state, registry or image file ({', '.join(leaked[:3]) or 'none'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--projects", default=",".join(PROJECTS), help="comma-separated: python, node, go")
    parser.add_argument("--rootfs", type=Path, default=DEFAULT_ROOTFS,
                        help="where the amd64 debootstrap tree is kept (the arm64 one beside it, suffix -arm64)")
    parser.add_argument("--logs", type=Path, help="keep every build's output in this directory")
    args = parser.parse_args()
    names = [p for p in args.projects.split(",") if p]
    unknown = [p for p in names if p not in PROJECTS]
    if unknown:
        parser.error(f"unknown project(s) {', '.join(unknown)}: expected some of {', '.join(PROJECTS)}")
    rootfses = {"amd64": debian_rootfs(args.rootfs),
                "arm64": debian_rootfs(args.rootfs.with_name(args.rootfs.name + "-arm64"), "arm64")}
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="lamina-docker-init-") as tmp:
        work = Path(tmp)
        session = Session(work, rootfses, args.logs)
        try:
            for name in names:
                print(f"{name} ({PROJECTS[name].directory}, {','.join(PROJECTS[name].platforms)})", file=sys.stderr)
                results[name] = run_project(session, name, PROJECTS[name])
                if PROJECTS[name].secrets:
                    check_no_leak(session, results[name])
        finally:
            session.registry.stop()
    cases = ["cold", "run amd64", "run arm64", "cached", "dependency", "dependency remote"]
    print("| project | " + " | ".join(cases) + " | checks |")
    print("|---|" + "---|" * len(cases) + "---|")
    for name, result in results.items():
        cells = [f"{result.seconds[c]:.1f} s" if c in result.seconds else "-" for c in cases]
        verdict = f"{len(result.checks)} ok" + (f", {len(result.failures)} FAILED" if result.failures else "")
        print(f"| {name} | " + " | ".join(cells) + f" | {verdict} |")
    return 1 if any(r.failures for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
