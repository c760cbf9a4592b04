#!/usr/bin/env bash
# Test rig: isolated libvirtd instances for rcloud's tests (docs/libvirt-rpc.md §10.3).
#
#   rig.sh up                        start main, remote, fault (idempotent)
#   rig.sh down                      stop everything we started (by PID) and remove state
#   rig.sh status                    show what runs
#   rig.sh stop-instance NAME [--all]   stop NAME's libvirtd (--all: its guests and virtlogd too)
#   rig.sh start-instance NAME       (re)start NAME on the same socket path and port
#   rig.sh restart-instance NAME     stop-instance + start-instance; running guests survive
#
# Each instance runs virtlogd + libvirtd in a private mount namespace in which
# /run is a fresh tmpfs and /run/libvirt, /var/{lib,cache,log}/libvirt and
# /etc/libvirt are bind mounts of directories under $RCLOUD_RIG_DIR/<name>, so a
# libvirtd the host may run is never touched. Everything is stopped by PID
# (pidfiles plus the instance's mount namespace), never by process name.
#
# Outputs $RIG/env.json and $RIG/env.sh (see write_env) for tests.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RIG="${RCLOUD_RIG_DIR:-/tmp/rcloud-rig}"
PORT_BASE="${RCLOUD_RIG_PORT_BASE:-16600}"
WAIT_SECS="${RCLOUD_RIG_WAIT:-30}"
# libvirtd probes every qemu binary at start (~4 s each under TCG, and the three
# daemons end up doing it one after another); a kept copy of the capabilities
# cache skips that. libvirt re-probes by itself when qemu/libvirt/kernel change.
CAPS_CACHE="${RCLOUD_QEMU_CAPS_CACHE:-/var/cache/rcloud-test/qemu-caps}"
INSTANCES=(main remote fault)

log() { echo "rig: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (system-mode libvirtd in a mount namespace)"
[[ "$RIG" == /* ]] || RIG="$(pwd)/$RIG"

idir() { echo "$RIG/$1"; }
# main and fault expose their unix socket outside the namespace; remote is TCP only.
has_sock() { [[ $1 == main || $1 == fault ]]; }
sock_path() { echo "$(idir "$1")/sock/libvirt-sock"; }

# --- process helpers -------------------------------------------------------

# Alive = exists and is not a zombie (a SIGKILLed daemon may linger unreaped).
alive() {
  local pid=$1 st
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  st="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ -n $st && $st != Z && $st != X ]]
}
readpid() { [[ -s $1 ]] && tr -dc '0-9' <"$1" || true; }
# PID from a pidfile, only if that process is alive and its command matches
# (protects against a recycled PID).
pid_of() {
  local file=$1 comm_re=$2 pid
  pid="$(readpid "$file")"
  [[ -n $pid ]] && alive "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" =~ $comm_re ]] && echo "$pid"
  return 0
}
libvirtd_pid() { pid_of "$(idir "$1")/libvirtd.pid" '^libvirtd$'; }
virtlogd_pid() { pid_of "$(idir "$1")/virtlogd.pid" '^virtlogd$'; }
qemu_pids() {
  local f
  for f in "$(idir "$1")"/run/qemu/*.pid; do
    [[ -e $f ]] && pid_of "$f" '^qemu'
  done
  return 0
}

# SIGTERM (plus SIGCONT, for tests that SIGSTOP a daemon), then SIGKILL after 5 s.
stop_pids() {
  local pids=() p i
  for p in "$@"; do alive "$p" && pids+=("$p"); done
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  kill -CONT "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    local left=()
    for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
    ((${#left[@]})) || return 0
    sleep 0.1
  done
  log "SIGKILL ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    local still=()
    for p in "${left[@]}"; do alive "$p" && still+=("$p"); done
    ((${#still[@]})) || return 0
    sleep 0.1
  done
  log "warning: still alive after SIGKILL: ${still[*]}"
}

# Every process living in the given mount namespaces (ours are private, so this
# finds qemu and helpers whose pidfiles are gone). Never matches the host's.
pids_in_ns() {
  local host_ns self_ns d ns
  host_ns="$(readlink /proc/1/ns/mnt)"
  self_ns="$(readlink /proc/$$/ns/mnt)"
  for d in /proc/[0-9]*; do
    ns="$(readlink "$d/ns/mnt" 2>/dev/null)" || continue
    [[ $ns == "$host_ns" || $ns == "$self_ns" ]] && continue
    for want in "$@"; do
      [[ $ns == "$want" ]] && { echo "${d#/proc/}"; break; }
    done
  done
  return 0
}

# --- ports -----------------------------------------------------------------

port_free() { [[ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }
pick_port() {
  local p=$1
  while ! port_free "$p" || [[ " ${TAKEN_PORTS:-} " == *" $p "* ]]; do
    ((p++))
    ((p < PORT_BASE + 200)) || die "no free TCP port in $PORT_BASE..$((PORT_BASE + 199))"
  done
  echo "$p"
}

# --- instance setup --------------------------------------------------------

prepare_instance() {
  local name=$1 port=$2 R
  R="$(idir "$name")"
  rm -rf "$R"
  mkdir -p "$R"/{lib,cache,log,run,sock}
  # qemu runs as libvirt-qemu and must traverse to files tests put under the rig.
  chmod 0755 "$R"
  echo "$port" >"$R/port"

  # Host config minus anything that would define or autostart guests/networks
  # (never start the NAT'd `default` network).
  cp -a /etc/libvirt "$R/etc"
  rm -f "$R"/etc/qemu/*.xml "$R"/etc/qemu/autostart/* \
    "$R"/etc/qemu/networks/autostart/* "$R"/etc/qemu/networks/default.xml \
    "$R"/etc/storage/autostart/* 2>/dev/null || true
  # No cgroups: two daemons naming guests qemu-1-<name> would collide in the
  # shared machine cgroup tree.
  printf '\n# rcloud rig\ncgroup_controllers = [ ]\n' >>"$R/etc/qemu.conf"

  {
    echo "# rcloud test rig instance '$name' (docs §10.2)"
    echo 'listen_tls = 0'
    echo 'listen_tcp = 1'
    echo 'listen_addr = "127.0.0.1"'
    echo "tcp_port = \"$port\""
    echo 'auth_tcp = "none"'
    echo 'auth_unix_rw = "none"'
    echo 'auth_unix_ro = "none"'
    has_sock "$name" && echo "unix_sock_dir = \"$R/sock\""
    # Distinct host UUIDs so instances look like different hosts (e.g. migration).
    echo "host_uuid = \"$(cat /proc/sys/kernel/random/uuid)\""
    echo 'log_outputs = "3:stderr"'
  } >"$R/libvirtd.conf"

  # Runs inside `unshare -m --propagation private`.
  cat >"$R/start.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
R='$R'
# A private /run hides the host's /run/libvirt, /run/systemd and D-Bus, so this
# libvirtd neither meets a host daemon nor registers with systemd-machined.
# (Skipped if the rig itself lives under /run.)
case "\$R/" in
  /run/*) mkdir -p /run/libvirt ;;
  *) mount -t tmpfs -o mode=0755 rcloud-rig-run /run; mkdir -p /run/libvirt /run/lock ;;
esac
mount --bind "\$R/run" /run/libvirt
for pair in lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt etc:/etc/libvirt; do
  mkdir -p "\${pair#*:}"
  mount --bind "\$R/\${pair%%:*}" "\${pair#*:}"
done
# virtlogd may still run from before a restart (it keeps guests' consoles logged).
vpid="\$(cat "\$R/virtlogd.pid" 2>/dev/null || true)"
if [[ -z "\$vpid" ]] || [[ "\$(cat /proc/\$vpid/comm 2>/dev/null)" != virtlogd ]]; then
  rm -f "\$R/virtlogd.pid"
  virtlogd -d -p "\$R/virtlogd.pid" >>"\$R/virtlogd.log" 2>&1
fi
exec libvirtd --listen -f "\$R/libvirtd.conf" -p "\$R/libvirtd.pid"
EOF
  chmod 0755 "$R/start.sh"
}

save_caps_cache() {
  local src
  src="$(idir main)/cache/qemu/capabilities"
  compgen -G "$src/*.xml" >/dev/null || return 0
  mkdir -p "$CAPS_CACHE"
  rm -f "$CAPS_CACHE"/*.xml
  cp -p "$src"/*.xml "$CAPS_CACHE/"
}

launch_instance() {
  local name=$1 R
  R="$(idir "$name")"
  rm -f "$R/libvirtd.pid"
  if ! compgen -G "$R/cache/qemu/capabilities/*.xml" >/dev/null &&
    compgen -G "$CAPS_CACHE/*.xml" >/dev/null; then
    mkdir -p "$R/cache/qemu/capabilities"
    cp -p "$CAPS_CACHE"/*.xml "$R/cache/qemu/capabilities/"
  fi
  # setsid detaches from our session; fd 9 (our lock) must not leak to daemons.
  setsid unshare -m --propagation private "$R/start.sh" \
    </dev/null >>"$R/libvirtd.log" 2>&1 9>&- &
  echo $! >"$R/launcher.pid"
}

# Ready = virsh gets an answer from the qemu driver over TCP (and unix socket).
wait_instance() {
  local name=$1 R port deadline lpid
  R="$(idir "$name")"
  port="$(cat "$R/port")"
  deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    lpid="$(readpid "$R/launcher.pid")"
    if ! alive "$lpid" && [[ -z "$(libvirtd_pid "$name")" ]]; then
      break # died
    fi
    if timeout 5 virsh -q -c "qemu+tcp://127.0.0.1:$port/system" version >/dev/null 2>&1 &&
      { ! has_sock "$name" || timeout 5 virsh -q -c "qemu+unix:///system?socket=$(sock_path "$name")" version >/dev/null 2>&1; }; then
      [[ -n "$(libvirtd_pid "$name")" && -n "$(virtlogd_pid "$name")" ]] && return 0
    fi
    sleep 0.2
  done
  log "instance '$name' did not come up within ${WAIT_SECS}s; libvirtd log:"
  tail -n 50 "$R/libvirtd.log" >&2 || true
  [[ -s $R/virtlogd.log ]] && { log "virtlogd log:"; tail -n 20 "$R/virtlogd.log" >&2; }
  return 1
}

# --- env files ---------------------------------------------------------------

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }
json_num() { [[ -n ${1:-} ]] && printf '%s' "$1" || printf 'null'; }

write_env() {
  local name R first=1 kernel initrd
  kernel="$(sed -n 1p "$RIG/guest.paths")"
  initrd="$(sed -n 2p "$RIG/guest.paths")"
  {
    printf '{\n  "rigDir": %s,\n  "instances": {\n' "$(json_str "$RIG")"
    for name in "${INSTANCES[@]}"; do
      R="$(idir "$name")"
      ((first)) || printf ',\n'
      first=0
      printf '    %s: {"socket": %s, "tcpPort": %s, "libvirtdPid": %s, "virtlogdPid": %s, "logFile": %s}' \
        "$(json_str "$name")" \
        "$(has_sock "$name" && json_str "$(sock_path "$name")" || echo null)" \
        "$(cat "$R/port")" \
        "$(json_num "$(libvirtd_pid "$name")")" \
        "$(json_num "$(virtlogd_pid "$name")")" \
        "$(json_str "$R/libvirtd.log")"
    done
    printf '\n  },\n  "guest": {"kernel": %s, "initrd": %s}\n}\n' "$(json_str "$kernel")" "$(json_str "$initrd")"
  } >"$RIG/env.json.tmp"
  mv -f "$RIG/env.json.tmp" "$RIG/env.json"

  {
    echo "# generated by scripts/lib/rig.sh; source me"
    printf 'export RCLOUD_RIG_DIR=%q\n' "$RIG"
    printf 'export RCLOUD_TEST_MAIN_SOCKET=%q\n' "$(sock_path main)"
    printf 'export RCLOUD_TEST_MAIN_TCP_PORT=%q\n' "$(cat "$(idir main)/port")"
    printf 'export RCLOUD_TEST_REMOTE_TCP_PORT=%q\n' "$(cat "$(idir remote)/port")"
    printf 'export RCLOUD_TEST_FAULT_SOCKET=%q\n' "$(sock_path fault)"
    printf 'export RCLOUD_TEST_FAULT_TCP_PORT=%q\n' "$(cat "$(idir fault)/port")"
    printf 'export RCLOUD_TEST_GUEST_KERNEL=%q\n' "$kernel"
    printf 'export RCLOUD_TEST_GUEST_INITRD=%q\n' "$initrd"
  } >"$RIG/env.sh.tmp"
  mv -f "$RIG/env.sh.tmp" "$RIG/env.sh"
}

instance_up() { [[ -f "$(idir "$1")/port" && -n "$(libvirtd_pid "$1")" && -n "$(virtlogd_pid "$1")" ]]; }

# --- commands ----------------------------------------------------------------

cmd_up() {
  local t0=$SECONDS name todo=() p
  if [[ -f $RIG/env.json ]]; then
    for name in "${INSTANCES[@]}"; do instance_up "$name" || todo+=("$name"); done
    if ((${#todo[@]} == 0)); then
      log "already up ($RIG/env.json)"
      return 0
    fi
    # Partly up (e.g. a fault test left an instance stopped): repair just those.
    for name in "${todo[@]}"; do start_instance "$name"; done
    write_env
    return 0
  fi

  # Longest socket: $RIG/fault/sock/libvirt-admin-sock (sun_path is 108 bytes).
  ((${#RIG} + 30 < 100)) || die "RCLOUD_RIG_DIR too long for unix socket paths: $RIG"
  # A stale rig (no env.json) may still have processes: clean it first.
  [[ -d $RIG ]] && cmd_down
  mkdir -p "$RIG"
  chmod 0755 "$RIG"
  touch "$RIG/.rcloud-rig"

  "$HERE/guest-image.sh" >"$RIG/guest.paths"

  TAKEN_PORTS=""
  p=$PORT_BASE
  for name in "${INSTANCES[@]}"; do
    p="$(pick_port "$p")"
    TAKEN_PORTS+=" $p"
    prepare_instance "$name" "$p"
    ((p++))
  done
  local failed=0
  if compgen -G "$CAPS_CACHE/*.xml" >/dev/null; then
    # Warm: start all three at once.
    for name in "${INSTANCES[@]}"; do launch_instance "$name"; done
    for name in "${INSTANCES[@]}"; do wait_instance "$name" || failed=1; done
  else
    # Cold: let main probe qemu alone, then seed the others with its cache
    # (probing in three daemons at once takes ~3x as long on 2 cores).
    launch_instance main
    if wait_instance main; then
      save_caps_cache
      for name in remote fault; do launch_instance "$name"; done
      for name in remote fault; do wait_instance "$name" || failed=1; done
    else
      failed=1
    fi
  fi
  if ((failed)); then
    cmd_down
    die "rig up failed"
  fi
  save_caps_cache
  write_env
  log "up in $((SECONDS - t0))s: $RIG/env.json"
}

start_instance() {
  local name=$1 R port
  R="$(idir "$name")"
  [[ -f $R/port ]] || die "unknown instance '$name' (is the rig up?)"
  if [[ -n "$(libvirtd_pid "$name")" ]]; then
    log "$name: libvirtd already running"
    return 0
  fi
  port="$(cat "$R/port")"
  port_free "$port" || die "$name: TCP port $port is taken by someone else"
  launch_instance "$name"
  wait_instance "$name" || die "$name failed to start"
}

stop_instance() {
  local name=$1 all=${2:-} R
  R="$(idir "$name")"
  [[ -f $R/port ]] || die "unknown instance '$name' (is the rig up?)"
  stop_pids $(libvirtd_pid "$name")
  if [[ $all == --all ]]; then
    stop_pids $(qemu_pids "$name")
    stop_pids $(virtlogd_pid "$name")
  fi
}

cmd_down() {
  local name R pids=() ns=() p n
  [[ -d $RIG ]] || return 0
  for name in "${INSTANCES[@]}"; do
    R="$(idir "$name")"
    [[ -d $R ]] || continue
    for p in $(libvirtd_pid "$name") $(virtlogd_pid "$name") $(qemu_pids "$name") \
      $(pid_of "$R/launcher.pid" '^(libvirtd|unshare|start\.sh|bash)$'); do
      pids+=("$p")
      n="$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" && ns+=("$n")
    done
  done
  # Order: daemons first so nothing restarts guests, then everything else that
  # lives in our namespaces (qemu, helpers).
  local daemons=() rest=()
  for name in "${INSTANCES[@]}"; do daemons+=($(libvirtd_pid "$name")); done
  stop_pids "${daemons[@]}"
  ((${#ns[@]})) && rest+=($(pids_in_ns "${ns[@]}"))
  stop_pids "${pids[@]}" "${rest[@]}"
  # Namespaces die with their last process, taking their mounts along.
  for name in "${INSTANCES[@]}"; do
    R="$(idir "$name")"
    [[ -f $R/libvirtd.conf ]] && rm -rf "$R"
  done
  rm -f "$RIG/env.json" "$RIG/env.sh" "$RIG/guest.paths"
  # Whatever tests left in the rig dir is transient too, but only wipe a
  # directory we created (RCLOUD_RIG_DIR might point somewhere precious).
  if [[ -f $RIG/.rcloud-rig ]]; then rm -rf "$RIG"; else rmdir "$RIG" 2>/dev/null || true; fi
  log "down"
}

cmd_status() {
  local name R st
  if [[ ! -f $RIG/env.json ]]; then
    echo "rig: not up ($RIG)"
    return 0
  fi
  echo "rig: $RIG"
  for name in "${INSTANCES[@]}"; do
    R="$(idir "$name")"
    local lp vp
    lp="$(libvirtd_pid "$name")"
    vp="$(virtlogd_pid "$name")"
    st=""
    [[ -n $lp ]] && [[ "$(awk '{print $3}' "/proc/$lp/stat")" == T ]] && st=" (STOPPED)"
    printf '%-7s port=%s socket=%s libvirtd=%s%s virtlogd=%s qemu=[%s]\n' "$name" \
      "$(cat "$R/port" 2>/dev/null)" "$(has_sock "$name" && sock_path "$name" || echo -)" \
      "${lp:-dead}" "$st" "${vp:-dead}" "$(qemu_pids "$name" | xargs)"
  done
}

# Serialise rig changes (tests may call restart-instance while another runs).
lock() {
  mkdir -p "$(dirname "$RIG")"
  exec 9>"$RIG.lock"
  flock 9
}

cmd=${1:-}
shift || true
case $cmd in
  up) lock; cmd_up ;;
  down) lock; cmd_down ;;
  status) cmd_status ;;
  stop-instance) lock; stop_instance "${1:?instance name}" "${2:-}"; write_env ;;
  start-instance) lock; start_instance "${1:?instance name}"; write_env ;;
  restart-instance) lock; stop_instance "${1:?instance name}" "${2:-}"; start_instance "$1"; write_env ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
