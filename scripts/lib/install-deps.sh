#!/usr/bin/env bash
# Install what rcloud needs to run and to be tested on Debian 12.
# Idempotent: dpkg-query first, apt only when something is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

PACKAGES=(
  libvirt-daemon-system libvirt-clients
  qemu-system-x86 qemu-utils python3-libvirt
  busybox-static linux-image-amd64 cpio xorriso
  # the bootable test disk image (scripts/lib/disk-image.sh)
  syslinux syslinux-common mtools dosfstools fdisk dropbear-bin
  openssh-client iproute2 procps
  # reaps libvirtd's QEMUs at once where PID 1 is no real init (the rig; run without systemd)
  tini
  # the rig's extra hosts: qemu+ssh (an sshd per host namespace; virt-ssh-helper is in
  # libvirt-daemon, nc -U the fallback) and qemu+tls (openssl makes the rig's CA and certs)
  openssh-server netcat-openbsd openssl
  # libvirt networks (DHCP on the isolated test network)
  dnsmasq-base
  # bench:rpc compiles its floor client (bench/rpc_floor_client.c)
  gcc libc6-dev
  # promtool, to lint our /metrics output in tests
  prometheus
  # tests: PyYAML reads our cloud-init output as cloud-init would
  python3-yaml
  # tests of deploy/: ansible-playbook runs the role; systemd-analyze verifies the unit (not PID 1)
  ansible-core systemd
  # tests: the API reference page and the web page (/ui/, driven over the DevTools protocol)
  # in a real (headless) browser
  chromium
  # tests of debug.gdb and panic dumps: Debian's gdb attaches to a guest's gdbstub; file(1)
  # recognises a dump as an ELF core
  gdb file
)

log() { echo "install-deps: $*" >&2; }

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# npm is only needed to fetch bun, and only when node_modules lacks it.
if [[ ! -x "$ROOT/node_modules/.bin/bun" ]] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

SUDO=()
[[ $(id -u) -eq 0 ]] || SUDO=(sudo)

if ((${#missing[@]})); then
  log "installing: ${missing[*]}"

  # Without systemd (containers, bare CI), the packages' postinst would start a
  # host libvirtd via init.d, with its NAT'd default network. The test rig runs
  # its own isolated daemons and needs none of that, so block service starts
  # for the duration of the install unless a policy is already in place.
  policy_added=""
  if [[ ! -d /run/systemd/system && ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 0755 /usr/sbin/policy-rc.d
    policy_added=1
    trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
  fi

  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

  if [[ -n "$policy_added" ]]; then
    "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

# The unprivileged user the qemu driver runs QEMU as when rcloud is root (qemu.run_as: auto;
# docs/deployment.md). In group kvm for /dev/kvm. Idempotent.
if ! getent passwd rcloud-qemu >/dev/null; then
  log "creating the system user rcloud-qemu"
  "${SUDO[@]}" useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
    --comment "rcloud QEMU processes" rcloud-qemu
fi
if getent group kvm >/dev/null && ! id -nG rcloud-qemu | tr ' ' '\n' | grep -qx kvm; then
  "${SUDO[@]}" usermod --append --groups kvm rcloud-qemu
fi

# libvirtd and virtlogd refuse to start without this directory (docs §10.1).
[[ -d /var/log/libvirt ]] || "${SUDO[@]}" mkdir -p /var/log/libvirt

# A package.json dependency missing from node_modules (one added since the last install):
# the first missing name, or nothing.
missing_dep() {
  [[ -d "$ROOT/node_modules" ]] && command -v node >/dev/null || return 0
  node -e 'const fs = require("fs"), p = require(process.argv[1] + "/package.json");
    for (const d of Object.keys({ ...p.dependencies, ...p.devDependencies }))
      if (!fs.existsSync(`${process.argv[1]}/node_modules/${d}/package.json`)) { console.log(d); break; }' "$ROOT"
}
if [[ ! -x "$ROOT/node_modules/.bin/bun" ]]; then
  log "installing node dependencies (bun)"
  cd "$ROOT"
  if [[ -f package-lock.json ]]; then
    SCARF_ANALYTICS=false npm ci --no-audit --no-fund
  else
    SCARF_ANALYTICS=false npm install --no-audit --no-fund
  fi
elif dep="$(missing_dep)" && [[ -n $dep ]]; then
  # Added to the tree in place (npm ci would remove node_modules first).
  log "installing node dependencies ($dep is missing)"
  cd "$ROOT"
  SCARF_ANALYTICS=false npm install --no-audit --no-fund
fi
