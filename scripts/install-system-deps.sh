#!/usr/bin/env bash
# Install the Debian packages lamina's builder, tests and benchmarks need.
# Idempotent: packages already present are not fetched again, and apt-get update runs
# only when something is missing.
set -euo pipefail

PACKAGES=(runc skopeo docker-registry busybox-static umoci buildah podman curl ca-certificates chromium
          slirp4netns passt golang-github-containers-common iproute2 apache2-utils
          golang-docker-credential-helpers pass gnupg debootstrap openssh-client
          qemu-user-static binfmt-support git patch
          ceph-mon ceph-osd radosgw ceph-common postgresql-15 haproxy)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exec bash "$(dirname "$0")/setup-emulation.sh"  # binfmt_misc + QEMU, test .debs
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "lamina: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
bash "$(dirname "$0")/setup-emulation.sh"  # binfmt_misc + QEMU, test .debs (idempotent)
