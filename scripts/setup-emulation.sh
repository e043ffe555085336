#!/usr/bin/env bash
# QEMU user-mode emulation for RUN steps of a foreign platform, and the busybox-static packages the
# multi-platform tests build their base image from. Run by install-system-deps.sh after the packages.
#
# 1. Mounts binfmt_misc on /proc/sys/fs/binfmt_misc if it is not mounted (it is not, by default, on a
#    host without systemd's proc-sys-fs-binfmt_misc.automount) and enables Debian's qemu-user-static
#    formats (qemu-aarch64, qemu-arm, ...) with update-binfmts. Their flags are "PF": F (fix-binary) makes
#    the kernel open the interpreter when the format is registered, so it works inside a container whose
#    root filesystem has no /usr/libexec/qemu-binfmt. The registration does not survive a reboot: run
#    this script again.
# 2. Downloads busybox-static for amd64 and arm64 (the version the BuildKit parity corpus was made with)
#    into $LAMINA_TEST_DEBS (default /var/cache/lamina/debs), where tests/helpers/multiarch.py reads them.
#
# Idempotent. Where a step is impossible (not root and no sudo, no binfmt_misc in the kernel, a read-only
# /proc inside an unprivileged container, no apt), it says so on stderr and goes on: exit status 0.
set -uo pipefail

BUSYBOX_VERSION="1:1.35.0-4+deb12u1+b1"
DEB_DIR="${LAMINA_TEST_DEBS:-/var/cache/lamina/debs}"
BINFMT=/proc/sys/fs/binfmt_misc

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "lamina: setup-emulation: not root and no sudo: skipped (QEMU emulation and test packages)" >&2
  exit 0
fi

note() { echo "lamina: setup-emulation: $*" >&2; }

# --- binfmt_misc + qemu-user-static -------------------------------------------------------------
if [ ! -e "$BINFMT/register" ]; then
  if ! "${SUDO[@]}" mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null; then
    note "cannot mount binfmt_misc on $BINFMT (no kernel support or no privilege): RUN steps of foreign platforms will be refused"
  fi
fi
if [ -e "$BINFMT/register" ] && command -v update-binfmts >/dev/null 2>&1; then
  for format in /usr/share/binfmts/qemu-*; do
    [ -e "$format" ] || continue
    name="$(basename "$format")"
    if [ ! -e "$BINFMT/$name" ]; then
      # a format the host runs natively is not packaged (no qemu-x86_64 on amd64); refusals are reported
      "${SUDO[@]}" update-binfmts --enable "$name" >/dev/null 2>&1 || note "update-binfmts --enable $name failed"
    fi
  done
elif [ -e "$BINFMT/register" ]; then
  note "update-binfmts not found: install binfmt-support and qemu-user-static"
fi

# --- busybox-static .deb files for the multi-platform test base image --------------------------
if command -v apt-get >/dev/null 2>&1; then
  "${SUDO[@]}" mkdir -p "$DEB_DIR"
  for arch in amd64 arm64; do
    file="$DEB_DIR/busybox-static_${arch}.deb"
    [ -s "$file" ] && continue
    lists=(-o "APT::Architectures::=amd64" -o "APT::Architectures::=$arch")
    if [ "$arch" = arm64 ] && ! apt-cache "${lists[@]}" show "busybox-static:arm64=$BUSYBOX_VERSION" >/dev/null 2>&1; then
      # the arm64 package index, fetched for this one command: the host's architectures are not changed
      "${SUDO[@]}" apt-get "${lists[@]}" update -qq >/dev/null 2>&1 || note "apt-get update (arm64 lists) failed"
    fi
    tmp="$(mktemp -d)"
    chmod 0755 "$tmp"  # apt's _apt sandbox user writes the download here
    if (cd "$tmp" && "${SUDO[@]}" apt-get "${lists[@]}" download -qq "busybox-static:$arch=$BUSYBOX_VERSION" >/dev/null 2>&1); then
      "${SUDO[@]}" mv "$tmp"/busybox-static_*.deb "$file"
    else
      note "apt-get download busybox-static:$arch=$BUSYBOX_VERSION failed: multi-platform tests cannot build their base image"
    fi
    "${SUDO[@]}" rm -rf "$tmp"
  done
fi
exit 0
