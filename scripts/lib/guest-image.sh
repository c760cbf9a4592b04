#!/usr/bin/env bash
# Build (and cache) a tiny guest for direct kernel boot under TCG:
#   - the host's newest Debian kernel, copied world-readable (qemu runs as libvirt-qemu)
#   - a busybox-static initramfs whose /init prints
#       RCLOUD-GUEST-BOOTED <uname -r>
#     on ttyS0 and then serves an interactive shell there; `poweroff -f` powers off.
# Rebuilt only when the kernel, busybox or this script changes (hash stamp).
# Prints two lines on stdout: the kernel path, then the initrd path. Logs go to stderr.
#
# Console notes for tests: the tty echoes what you type, so match the *expanded*
# answer (type `echo hello-$RANDOM` or `echo hello-$((6*7))`, wait for /hello-\d+/ on a
# line of its own); busybox line editing also emits ESC[6n after each prompt.
#
# Verified with (banner after ~8 s under TCG on 2 cores, `echo hello-$((6*7))` answered
# with hello-42, and `poweroff -f` makes qemu exit 0):
#   K=/var/cache/rcloud-test/guest/vmlinuz I=/var/cache/rcloud-test/guest/initrd.img
#   { sleep 12; echo 'echo hello-$((6*7))'; sleep 2; echo 'poweroff -f'; } | \
#     timeout 60 qemu-system-x86_64 -machine q35,accel=tcg -m 256 -nographic \
#       -kernel "$K" -initrd "$I" -append 'console=ttyS0 panic=-1' -no-reboot
#   (expect "RCLOUD-GUEST-BOOTED 6.1.0-...-amd64", "hello-42", then qemu exits 0)
set -euo pipefail

CACHE="${RCLOUD_GUEST_CACHE:-/var/cache/rcloud-test/guest}"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
BUSYBOX=/bin/busybox

log() { echo "guest-image: $*" >&2; }

# Newest installed Debian kernel.
KERNEL_SRC="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -n "$KERNEL_SRC" ]] || { log "no /boot/vmlinuz-* found (install linux-image-amd64)"; exit 1; }
# The initramfs has no libc, so busybox must be the static build.
bb_ldd="$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)"
[[ -x "$BUSYBOX" && "$bb_ldd" == *"not a dynamic"* ]] || {
  log "$BUSYBOX missing or not static (install busybox-static)"; exit 1; }

mkdir -p "$CACHE"
# qemu (as libvirt-qemu) must be able to reach the files.
chmod 0755 "$CACHE"
KERNEL="$CACHE/vmlinuz"
INITRD="$CACHE/initrd.img"
STAMP="$CACHE/stamp"

# One builder at a time: scripts/test and rig.sh may both call us.
exec 9>"$CACHE/.lock"
flock 9

want="$(cat "$KERNEL_SRC" "$BUSYBOX" "$SELF" | sha256sum | cut -d' ' -f1) $(basename "$KERNEL_SRC")"
if [[ -f "$STAMP" && -f "$KERNEL" && -f "$INITRD" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "$KERNEL"
  echo "$INITRD"
  exit 0
fi

log "building guest from $KERNEL_SRC into $CACHE"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,root,etc}
cp "$BUSYBOX" "$root/bin/busybox"
# Kernel needs a console node before devtmpfs is mounted.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/root PS1='rcloud# '
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
hostname rcloud-guest
# Tests look for this exact line on the serial console.
echo "RCLOUD-GUEST-BOOTED $(uname -r)" >/dev/ttyS0
# PID 1 must not exit (kernel panic), so respawn the shell. setsid + opening
# ttyS0 makes it the shell's controlling tty, so job control and ^C work.
while true; do
  setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
  sleep 1
done
EOF
chmod 0755 "$root/init"

(cd "$root" && find . -print0 | cpio --null -o -H newc --owner=0:0 --quiet) | gzip -9 >"$work/initrd.img"
install -m 0644 "$KERNEL_SRC" "$work/vmlinuz"

mv -f "$work/vmlinuz" "$KERNEL"
mv -f "$work/initrd.img" "$INITRD"
echo "$want" >"$STAMP"
log "built $(du -h "$INITRD" | cut -f1) initrd for $(basename "$KERNEL_SRC")"

echo "$KERNEL"
echo "$INITRD"
