#!/usr/bin/env bash
# Build (and cache) a tiny bootable disk image for end-to-end tests under TCG:
#   rcloud-tiny.raw  MBR + syslinux, one FAT16 partition holding the host's newest
#                    Debian kernel and a busybox-static initramfs (~21 MiB, 13 used)
#   rcloud-tiny.qcow2  the same as qcow2
#   vmlinuz, initrd.img  the image's own kernel and initramfs, for direct-boot tests
# Its /init (scripts/lib/disk-image/init) prints on ttyS0, in order:
#   RCLOUD-DISK-BOOTED <uname -r>
#   RCLOUD-SEED user=<name> keys=<n> hostname=<h> dev=<dev>   (or RCLOUD-SEED none)
#   RCLOUD-MOUNT <spec> <dir> <fstype> ok|failed: <why>     (one per `mounts:` item)
#   RCLOUD-NET <iface> <ip>
#   RCLOUD-SSH-READY
# i.e. it reads a cloud-init NoCloud seed (iso9660 labelled cidata, as a CD-ROM or a
# virtio/SCSI disk), creates the first `users:` entry (uid 1000, /bin/sh; root if
# none) with every ssh key found in user-data (root gets them too), DHCPs the first
# ethernet NIC, and runs dropbear on port 22 (keys only). Then a root shell serves
# ttyS0; `poweroff -f` and ACPI power button (virsh shutdown) power off.
# Nothing is mounted from the disk after boot: all runs from the initramfs.
# Built without loop devices or mounts (mkfs.vfat + mtools + syslinux on files).
# Rebuilt only when an input changes (hash stamp). Prints the qcow2 path, then
# the raw path (last line) on stdout. Logs go to stderr.
#
# Verified with (2 cores, TCG: RCLOUD-SSH-READY ~10 s and `uname -r` over ssh
# ~10.5 s after qemu start; the same with the seed as a virtio disk):
#   D=/var/cache/rcloud-test/disk T=$(mktemp -d) && cd "$T"
#   ssh-keygen -q -t ed25519 -N '' -f key
#   printf '#cloud-config\nhostname: tiny1\nusers:\n  - name: kdevops\n    ssh_authorized_keys:\n      - %s\n' \
#     "$(cat key.pub)" >user-data
#   printf 'instance-id: i-1\nlocal-hostname: tiny1\n' >meta-data
#   xorriso -as mkisofs -V cidata -J -R -o seed.iso user-data meta-data
#   qemu-img create -f qcow2 -F raw -b "$D/rcloud-tiny.raw" overlay.qcow2 2G
#   timeout 300 qemu-system-x86_64 -machine q35,accel=tcg -m 256 -nographic \
#     -drive file=overlay.qcow2,if=none,id=d0,format=qcow2 -device virtio-blk-pci,drive=d0 \
#     -drive file=seed.iso,media=cdrom,readonly=on \
#     -netdev user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22 \
#     -device virtio-net-pci,netdev=n0,bus=pcie.0,addr=0x10 \
#     -serial mon:stdio </dev/null >console.log 2>&1 &
#   # wait for RCLOUD-SSH-READY in console.log, then:
#   ssh -i key -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
#     kdevops@127.0.0.1 uname -r          # -> 6.1.0-...-amd64
#   kill <qemu pid>
#   Seed as a virtio disk instead of the CD-ROM:
#     -drive file=seed.iso,if=none,id=s0,format=raw,readonly=on -device virtio-blk-pci,drive=s0
set -euo pipefail

CACHE="${RCLOUD_DISK_CACHE:-/var/cache/rcloud-test/disk}"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"
FILES="$(dirname "$SELF")/disk-image"
BUSYBOX=/bin/busybox
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin

# Drivers a q35/pc guest needs for its disks, CD-ROM (AHCI on q35, PIIX on pc),
# NIC and ACPI power button, shared directories (virtiofs, 9p) and the pvpanic
# device (a guest panic reaches QEMU as GUEST_PANICKED). Dependencies are added from modules.dep.
MODULES=(
  virtio_pci virtio_blk virtio_net virtio_scsi virtio_balloon nvme
  ahci ata_piix sr_mod sd_mod isofs
  button evdev
  virtiofs 9p 9pnet_virtio pvpanic_pci pvpanic_mmio
)
# Synchronous SCSI scan: the CD-ROM exists as soon as ahci is loaded.
declare -A MODULE_PARAMS=([scsi_mod]="scan=sync")

log() { echo "disk-image: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "$1 not found (install $2)"; exit 1; }; }

need mkfs.vfat dosfstools
need mcopy mtools
need syslinux syslinux
need sfdisk fdisk
need qemu-img qemu-utils
need cpio cpio
need dropbear dropbear-bin
need dropbearkey dropbear-bin
[[ -f "$MBR_BIN" ]] || { log "$MBR_BIN missing (install syslinux-common)"; exit 1; }

# Newest installed Debian kernel; its modules must match it, not the host's
# running kernel (which may be a container's).
# shellcheck disable=SC2012 # Debian kernel file names are plain
KERNEL_SRC="$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)"
[[ -n "$KERNEL_SRC" ]] || { log "no /boot/vmlinuz-* found (install linux-image-amd64)"; exit 1; }
KVER="${KERNEL_SRC##*/vmlinuz-}"
MODDIR="/lib/modules/$KVER"
[[ -f "$MODDIR/modules.dep" ]] || { log "$MODDIR/modules.dep missing"; exit 1; }
# The initramfs has no libc for busybox, so it must be the static build.
bb_ldd="$(LC_ALL=C ldd "$BUSYBOX" 2>&1 || true)"
[[ -x "$BUSYBOX" && "$bb_ldd" == *"not a dynamic"* ]] || {
  log "$BUSYBOX missing or not static (install busybox-static)"; exit 1; }
DROPBEAR="$(command -v dropbear)"
DROPBEARKEY="$(command -v dropbearkey)"

# --- module list in load order ------------------------------------------------
declare -A MOD_PATH MOD_DEPS MOD_DONE
while IFS=: read -r path deps; do
  name="${path##*/}"
  name="${name%%.ko*}"
  name="${name//-/_}"
  MOD_PATH[$name]="$path"
  MOD_DEPS[$name]="$deps"
done <"$MODDIR/modules.dep"
LOAD_ORDER=()
add_module() {
  local name="${1//-/_}" dep
  [[ -z "${MOD_DONE[$name]:-}" ]] || return 0
  MOD_DONE[$name]=1
  if [[ -z "${MOD_PATH[$name]:-}" ]]; then
    # Built into the kernel: nothing to load.
    grep -qE "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" ||
      log "warning: module $name not found for $KVER"
    return 0
  fi
  for dep in ${MOD_DEPS[$name]}; do
    dep="${dep##*/}"
    add_module "${dep%%.ko*}"
  done
  LOAD_ORDER+=("$name")
}
for m in "${MODULES[@]}"; do add_module "$m"; done

# Shared libraries of dropbear(key), plus the dynamic loader.
mapfile -t LIBS < <(ldd "$DROPBEAR" "$DROPBEARKEY" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $1 !~ /:$/ { print $1 }' | sort -u)

mkdir -p "$CACHE"
# qemu (as libvirt-qemu) must be able to reach the files.
chmod 0755 "$CACHE"
RAW="$CACHE/rcloud-tiny.raw"
QCOW="$CACHE/rcloud-tiny.qcow2"
STAMP="$CACHE/stamp"

# One builder at a time: tests may call us in parallel.
exec 9>"$CACHE/.lock"
flock 9

inputs=("$KERNEL_SRC" "$BUSYBOX" "$DROPBEAR" "$DROPBEARKEY" "${LIBS[@]}" "$MBR_BIN"
  "$(command -v syslinux)" "$SELF" "$FILES"/*)
for m in "${LOAD_ORDER[@]}"; do inputs+=("$MODDIR/${MOD_PATH[$m]}"); done
want="$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1) $KVER"
if [[ -f "$STAMP" && -f "$RAW" && -f "$QCOW" && -f "$CACHE/initrd.img" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "$QCOW"
  echo "$RAW"
  exit 0
fi

log "building disk image from $KERNEL_SRC into $CACHE"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- initramfs ----------------------------------------------------------------
root="$work/root"
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,root,home,mnt,etc,var/run,var/log,lib64}
cp "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
# Kernel needs a console node before devtmpfs is mounted.
mknod -m 600 "$root/dev/console" c 5 1
mknod -m 666 "$root/dev/null" c 1 3
install -m 0755 "$FILES/init" "$root/init"
install -m 0755 "$FILES/udhcpc.script" "$root/etc/udhcpc.script"

mkdir -p "$root/usr/bin" "$root/usr/sbin"
cp "$DROPBEAR" "$root/usr/sbin/dropbear"
cp "$DROPBEARKEY" "$root/usr/bin/dropbearkey"
ln -s ../usr/sbin/dropbear "$root/sbin/dropbear"
ln -s ../usr/bin/dropbearkey "$root/bin/dropbearkey"
# Same paths as on the host: ld.so searches /lib/x86_64-linux-gnu by default.
for lib in "${LIBS[@]}"; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
printf 'root:*:19000:0:99999:7:::\n' >"$root/etc/shadow"
chmod 0600 "$root/etc/shadow"
# dropbear only lets users in whose shell is listed here.
printf '/bin/sh\n/bin/ash\n' >"$root/etc/shells"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
# busybox acpid's default map sends the power button (KEY_POWER) to PWRF/00000080.
mkdir -p "$root/etc/acpi/PWRF"
printf '#!/bin/sh\necho "RCLOUD-POWEROFF acpi" >/dev/ttyS0\nsync\npoweroff -f\n' >"$root/etc/acpi/PWRF/00000080"
chmod 0755 "$root/etc/acpi/PWRF/00000080"

kmod="$root/lib/modules/$KVER"
mkdir -p "$kmod"
: >"$root/lib/modules/load.list"
for m in "${LOAD_ORDER[@]}"; do
  src="$MODDIR/${MOD_PATH[$m]}"
  dst="${MOD_PATH[$m]%.ko*}.ko"
  mkdir -p "$kmod/$(dirname "$dst")"
  # busybox insmod may lack xz/zstd support: store modules uncompressed.
  case "$src" in
    *.ko.xz) xz -dc "$src" >"$kmod/$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$kmod/$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$kmod/$dst" ;;
    *) cp "$src" "$kmod/$dst" ;;
  esac
  echo "$dst ${MODULE_PARAMS[$m]:-}" >>"$root/lib/modules/load.list"
done

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --owner=0:0 --quiet) |
  gzip -9 >"$work/initrd.img"

# --- FAT partition (syslinux installs into the image file via mtools) --------
cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT rcloud
PROMPT 0
TIMEOUT 0
LABEL rcloud
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND console=ttyS0,115200
EOF
part_start=2048 # sectors: 1 MiB alignment
payload=$(($(stat -c %s "$KERNEL_SRC") + $(stat -c %s "$work/initrd.img")))
fat_mib=$(((payload + (1 << 20) - 1) / (1 << 20) + 4))
((fat_mib >= 20)) || fat_mib=20 # stay well inside FAT16's cluster-count range
fat="$work/fat.img"
# -h: hidden sectors = partition offset, for the boot sector's own LBA maths.
mkfs.vfat -F 16 -h "$part_start" -n RCLOUD -i 52434c44 -C "$fat" $((fat_mib * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
syslinux --install "$fat"
mcopy -i "$fat" "$KERNEL_SRC" ::/vmlinuz
mcopy -i "$fat" "$work/initrd.img" ::/initrd.img
mcopy -i "$fat" "$work/syslinux.cfg" ::/syslinux.cfg

# --- disk: MBR (syslinux boot code) + one active FAT16-LBA partition ----------
disk="$work/disk.raw"
truncate -s $(((fat_mib + 1) << 20)) "$disk"
printf "label: dos\nlabel-id: 0x52434c44\nstart=%s, type=e, bootable\n" "$part_start" | sfdisk -q "$disk"
dd if="$MBR_BIN" of="$disk" bs=440 count=1 conv=notrunc status=none
dd if="$fat" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$disk" "$work/disk.qcow2"
chmod 0644 "$disk" "$work/disk.qcow2"

install -m 0644 "$KERNEL_SRC" "$CACHE/vmlinuz"
install -m 0644 "$work/initrd.img" "$CACHE/initrd.img"
mv -f "$work/disk.raw" "$RAW"
mv -f "$work/disk.qcow2" "$QCOW"
echo "$want" >"$STAMP"
log "built $(du -h --apparent-size "$RAW" | cut -f1) raw ($(du -h "$RAW" | cut -f1) allocated)," \
  "$(du -h "$QCOW" | cut -f1) qcow2, initrd $(du -h "$work/initrd.img" | cut -f1), kernel $KVER"

echo "$QCOW"
echo "$RAW"
