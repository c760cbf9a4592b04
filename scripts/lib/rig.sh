#!/usr/bin/env bash
# Test rig: isolated libvirtd instances for rcloud's tests (docs/testing.md, "The rig").
#
#   rig.sh up                        start main, remote, fault, hosta, hostb, hostc (idempotent)
#   rig.sh down                      stop everything we started (by PID) and remove state
#   rig.sh status                    show what runs
#   rig.sh stop-instance NAME [--all]   stop NAME's libvirtd (--all: its guests, virtlogd and sshd too)
#   rig.sh start-instance NAME       (re)start NAME on the same socket path and port
#   rig.sh restart-instance NAME     stop-instance + start-instance; running guests survive
#
# Each instance runs virtlogd + libvirtd in a private mount namespace in which
# /run is a fresh tmpfs and /run/libvirt, /var/{lib,cache,log}/libvirt and
# /etc/libvirt are bind mounts of directories under $RCLOUD_RIG_DIR/<name>, so a
# libvirtd the host may run is never touched. Everything is stopped by PID
# (pidfiles plus the instance's mount namespace), never by process name.
#
# The hosts (hosta, hostb, hostc) stand for separate machines of a fleet: each also has its
# own UTS namespace (hostname rcloud-<name>), is reached over qemu+tls (certificates of a
# rig CA: rig_pki), qemu+ssh (an sshd inside its namespace on a loopback port, keys only:
# prepare_host) and qemu+tcp, and sees /srv/rcloud/{pool,images,kernels}, which exist only
# inside its namespace (bind mounts of $RCLOUD_RIG_DIR/<name>/srv/*).
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
# Fleet hosts, and the transport of the "uri" env.json gives each (all three work on each).
HOSTS=(hosta hostb hostc)
declare -A HOST_TRANSPORT=([hosta]=tls [hostb]=ssh [hostc]=tcp)
ALL=("${INSTANCES[@]}" "${HOSTS[@]}")
# Directories a host sees inside its namespace (bind mounts of $R/srv/<dir>).
HOST_SRV=/srv/rcloud
HOST_DIRS=(pool images kernels)
# Hosts whose images directory starts with the tiny bootable disk (the others start empty).
SEEDED_HOSTS=" hosta hostb "

log() { echo "rig: $*" >&2; }
die() { log "$*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (system-mode libvirtd in a mount namespace)"
[[ "$RIG" == /* ]] || RIG="$(pwd)/$RIG"

idir() { echo "$RIG/$1"; }
# main and fault expose their unix socket outside the namespace; remote is TCP only.
has_sock() { [[ $1 == main || $1 == fault ]]; }
is_host() { [[ " ${HOSTS[*]} " == *" $1 "* ]]; }
sock_path() { echo "$(idir "$1")/sock/libvirt-sock"; }
host_name() { echo "rcloud-$1"; }

# --- process helpers -------------------------------------------------------

# Alive = exists and is not a zombie (a SIGKILLed daemon may linger unreaped).
# (Builtins only: these run in loops, and every fork counts on a busy machine.)
alive() {
  local pid=$1 stat st
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
  stat=${stat##*) } # the state follows the command name, which may hold spaces
  st=${stat%% *}
  [[ -n $st && $st != Z && $st != X ]]
}
readpid() {
  local v=""
  [[ -s $1 ]] && { read -r v <"$1" || true; }
  echo "${v//[^0-9]/}"
}
# PID from a pidfile, only if that process is alive and its command matches
# (protects against a recycled PID).
pid_of() {
  local file=$1 comm_re=$2 pid comm=""
  pid="$(readpid "$file")"
  [[ -n $pid ]] && alive "$pid" && { read -r comm <"/proc/$pid/comm"; } 2>/dev/null && [[ $comm =~ $comm_re ]] && echo "$pid"
  return 0
}
libvirtd_pid() { pid_of "$(idir "$1")/libvirtd.pid" '^libvirtd$'; }
virtlogd_pid() { pid_of "$(idir "$1")/virtlogd.pid" '^virtlogd$'; }
sshd_pid() {
  is_host "$1" && pid_of "$(idir "$1")/sshd.pid" '^sshd$'
  return 0
}
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

port_free() {
  if [[ -n ${LISTENING:-} ]]; then [[ $LISTENING != *" $1 "* ]]; else [[ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; fi
}
# The TCP ports in use, once, for pick_port (set LISTENING="" again afterwards).
snapshot_listening() {
  local line
  LISTENING=" "
  while read -r _ _ _ line _; do LISTENING+="${line##*:} "; done < <(ss -Hltn 2>/dev/null)
}
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
  is_host "$name" && prepare_host "$name"

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
    if is_host "$name"; then
      echo 'listen_tls = 1'
      echo "tls_port = \"$(cat "$R/tls_port")\""
      echo "ca_file = \"$RIG/pki/ca/cacert.pem\""
      echo "cert_file = \"$R/pki/servercert.pem\""
      echo "key_file = \"$R/pki/serverkey.pem\""
    else
      echo 'listen_tls = 0'
    fi
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

  # Runs inside `unshare -m --propagation private` (hosts: -m -u).
  cat >"$R/start.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
R='$R'
IS_HOST='$(is_host "$name" && echo 1)'
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
if [[ -n "\$IS_HOST" ]]; then
  hostname '$(host_name "$name")'
  # A fresh machine's root: no dotfiles of this box's root run on ssh logins.
  mount -t tmpfs -o mode=0700 rcloud-rig-root /root
  # $HOST_SRV exists only in here: a tmpfs over /srv holds its mount points.
  mount -t tmpfs -o mode=0755 rcloud-rig-srv /srv
  for d in ${HOST_DIRS[*]}; do
    mkdir -p "$HOST_SRV/\$d"
    mount --bind "\$R/srv/\$d" "$HOST_SRV/\$d"
  done
  # sshd outlives a libvirtd restart, like virtlogd; it reaches the new socket through \$R/run.
  spid="\$(cat "\$R/sshd.pid" 2>/dev/null || true)"
  if [[ -z "\$spid" ]] || [[ "\$(cat /proc/\$spid/comm 2>/dev/null)" != sshd ]]; then
    rm -f "\$R/sshd.pid"
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    /usr/sbin/sshd -f "\$R/ssh/sshd_config" -E "\$R/sshd.log"
  fi
fi
# virtlogd may still run from before a restart (it keeps guests' consoles logged).
vpid="\$(cat "\$R/virtlogd.pid" 2>/dev/null || true)"
if [[ -z "\$vpid" ]] || [[ "\$(cat /proc/\$vpid/comm 2>/dev/null)" != virtlogd ]]; then
  rm -f "\$R/virtlogd.pid"
  virtlogd -d -p "\$R/virtlogd.pid" >>"\$R/virtlogd.log" 2>&1
fi
# tini -s: libvirtd's QEMUs (daemonized, so orphans) are reaped the moment they die, as
# systemd does on a real host. Left to a PID 1 that reaps late (some sandboxes' init), a
# killed QEMU stays a zombie and libvirtd's virProcessKillPainfully waits ~1.6 s on it before
# it reports the crash.
exec tini -s -- libvirtd --listen -f "\$R/libvirtd.conf" -p "\$R/libvirtd.pid"
EOF
  chmod 0755 "$R/start.sh"
}

# --- fleet hosts -------------------------------------------------------------

# The TLS and SSH ports cmd_up chose for a host.
host_ports() { echo "${PORTS[$1.tls]} ${PORTS[$1.ssh]}"; }

# Ports, directories, certificate and sshd of one host (rig_pki and rig_ssh_keys ran before).
prepare_host() {
  local name=$1 R tls ssh d kernel initrd
  R="$(idir "$name")"
  read -r tls ssh <<<"$(host_ports "$name")"
  echo "$tls" >"$R/tls_port"
  echo "$ssh" >"$R/ssh_port"

  for d in "${HOST_DIRS[@]}"; do mkdir -p "$R/srv/$d"; done
  kernel="$(sed -n 1p "$RIG/guest.paths")"
  initrd="$(sed -n 2p "$RIG/guest.paths")"
  cp "$kernel" "$initrd" "$R/srv/kernels/"
  [[ $SEEDED_HOSTS == *" $name "* ]] && cp "$(sed -n 1p "$RIG/disk.paths")" "$R/srv/images/"
  chmod -R u=rwX,go=rX "$R/srv"

  mkdir -p "$R/pki"
  rig_cert "$R/pki/servercert.pem" "$R/pki/serverkey.pem" "/O=rcloud test rig/CN=$(host_name "$name")" ca serverAuth \
    "subjectAltName=DNS:$(host_name "$name"),IP:127.0.0.1"

  mkdir -p "$R/ssh"
  ssh-keygen -q -t ed25519 -N '' -C "$(host_name "$name") host key" -f "$R/ssh/host_ed25519_key"
  cp "$RIG/ssh/id_ed25519.pub" "$R/ssh/authorized_keys"
  # Everything explicit: nothing from /etc/ssh, no PAM, keys only, loopback only.
  cat >"$R/ssh/sshd_config" <<EOF
# rcloud test rig: the sshd of host $name (never the host's /etc/ssh config or port 22)
Port $ssh
ListenAddress 127.0.0.1
HostKey $R/ssh/host_ed25519_key
PidFile $R/sshd.pid
AuthorizedKeysFile $R/ssh/authorized_keys
AuthorizedPrincipalsFile none
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitRootLogin prohibit-password
AllowUsers root
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
AllowStreamLocalForwarding no
PermitTunnel no
PermitUserEnvironment no
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
LogLevel VERBOSE
EOF
  printf '[127.0.0.1]:%s %s\n' "$ssh" "$(cut -d' ' -f1-2 "$R/ssh/host_ed25519_key.pub")" >>"$RIG/ssh/known_hosts"
}

# rig_cert CERT KEY SUBJECT SIGNER PURPOSE [EXTENSION]: an EC key and a leaf certificate
# signed by $RIG/pki/SIGNER, with what libvirt checks (not a CA, usage, purpose).
rig_cert() {
  local cert=$1 key=$2 subj=$3 signer=$4 purpose=$5 extra=${6:-}
  local args=(-x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -subj "$subj"
    -CA "$RIG/pki/$signer/cacert.pem" -CAkey "$RIG/pki/$signer/cakey.pem"
    -addext "basicConstraints=critical,CA:FALSE"
    -addext "keyUsage=critical,digitalSignature,keyEncipherment"
    -addext "extendedKeyUsage=$purpose")
  [[ -n $extra ]] && args+=(-addext "$extra")
  openssl req "${args[@]}" -keyout "$key" -out "$cert" 2>/dev/null
  chmod 0600 "$key"
}

# The rig's CA, a rogue CA, and client directories for pkipath=:
#   client/        the rig CA and a client certificate it signed (the good case)
#   rogue-ca/      the rogue CA and a client certificate of its own (the hosts are unknown to it)
#   rogue-client/  the rig CA, but a client certificate the rogue CA signed
#   no-client/     the rig CA only, no client certificate
rig_pki() {
  local P="$RIG/pki" ca d
  for ca in ca rogue-ca; do
    mkdir -p "$P/$ca"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj "/O=rcloud test rig/CN=rcloud rig $ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$P/$ca/cakey.pem" -out "$P/$ca/cacert.pem" 2>/dev/null
    chmod 0600 "$P/$ca/cakey.pem"
  done
  for d in client rogue-client no-client; do
    mkdir -p "$P/$d"
    cp "$P/ca/cacert.pem" "$P/$d/"
  done
  rig_cert "$P/client/clientcert.pem" "$P/client/clientkey.pem" "/O=rcloud test rig/CN=rcloud client" ca clientAuth
  rig_cert "$P/rogue-ca/clientcert.pem" "$P/rogue-ca/clientkey.pem" "/O=rogue/CN=rogue client" rogue-ca clientAuth
  rig_cert "$P/rogue-client/clientcert.pem" "$P/rogue-client/clientkey.pem" "/O=rogue/CN=rogue client" rogue-ca clientAuth
}

# The client's SSH key and known_hosts files (prepare_host adds each host's key).
rig_ssh_keys() {
  mkdir -p "$RIG/ssh"
  ssh-keygen -q -t ed25519 -N '' -C "rcloud rig client" -f "$RIG/ssh/id_ed25519"
  : >"$RIG/ssh/known_hosts"
  : >"$RIG/ssh/empty_known_hosts"
}

# Ready = sshd wrote its pidfile and listens.
wait_sshd() {
  local name=$1 R port deadline
  R="$(idir "$name")"
  port="$(cat "$R/ssh_port")"
  deadline=$((SECONDS + WAIT_SECS))
  while ((SECONDS < deadline)); do
    [[ -n "$(sshd_pid "$name")" ]] && ! port_free "$port" && return 0
    sleep 0.1
  done
  log "sshd of '$name' did not come up within ${WAIT_SECS}s; its log:"
  tail -n 20 "$R/sshd.log" >&2 || true
  return 1
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
  local ns=(-m)
  is_host "$name" && ns+=(-u) # its own hostname
  setsid unshare "${ns[@]}" --propagation private "$R/start.sh" \
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
      if [[ -n "$(libvirtd_pid "$name")" && -n "$(virtlogd_pid "$name")" ]]; then
        is_host "$name" || return 0
        wait_sshd "$name" && return 0
        break
      fi
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

# The URIs of a host over each transport, with the rig's credentials, into URI[tls|ssh|tcp].
host_uris() {
  local R tcp tls ssh
  R="$(idir "$1")"
  read -r tcp <"$R/port"
  read -r tls <"$R/tls_port"
  read -r ssh <"$R/ssh_port"
  declare -gA URI=(
    [tls]="qemu+tls://127.0.0.1:$tls/system?pkipath=$RIG/pki/client"
    [ssh]="qemu+ssh://root@127.0.0.1:$ssh/system?keyfile=$RIG/ssh/id_ed25519&known_hosts=$RIG/ssh/known_hosts"
    [tcp]="qemu+tcp://127.0.0.1:$tcp/system"
  )
  declare -gA HOST_PORT=([tcp]=$tcp [tls]=$tls [ssh]=$ssh)
}

# JSON object {"pool": "<prefix>/pool", ...} of the host directories.
dirs_json() {
  local d sep=""
  printf '{'
  for d in "${HOST_DIRS[@]}"; do
    printf '%s"%s": ' "$sep" "$d"
    json_str "$1/$d"
    sep=", "
  done
  printf '}'
}

write_host_json() {
  local name=$1 R f sep=""
  R="$(idir "$name")"
  host_uris "$name"
  printf '    "%s": {\n      "hostname": "%s",\n      "transport": "%s",\n' "$name" "$(host_name "$name")" "${HOST_TRANSPORT[$name]}"
  printf '      "uri": '; json_str "${URI[${HOST_TRANSPORT[$name]}]}"
  printf ',\n      "uris": {"tls": '; json_str "${URI[tls]}"
  printf ', "ssh": '; json_str "${URI[ssh]}"
  printf ', "tcp": '; json_str "${URI[tcp]}"
  printf '},\n      "tcpPort": %s, "tlsPort": %s, "sshPort": %s,\n' "${HOST_PORT[tcp]}" "${HOST_PORT[tls]}" "${HOST_PORT[ssh]}"
  printf '      "libvirtdPid": %s, "virtlogdPid": %s, "sshdPid": %s,\n' "$(json_num "$(libvirtd_pid "$name")")" \
    "$(json_num "$(virtlogd_pid "$name")")" "$(json_num "$(sshd_pid "$name")")"
  printf '      "logFile": '; json_str "$R/libvirtd.log"
  printf ', "sshdLogFile": '; json_str "$R/sshd.log"
  printf ',\n      "paths": '; dirs_json "$HOST_SRV"
  printf ',\n      "rigPaths": '; dirs_json "$R/srv"
  printf ',\n      "guest": {"kernel": '; json_str "$HOST_SRV/kernels/${GUEST_KERNEL##*/}"
  printf ', "initrd": '; json_str "$HOST_SRV/kernels/${GUEST_INITRD##*/}"
  printf '},\n      "images": ['
  for f in "$R"/srv/images/*; do
    [[ -e $f ]] || continue
    printf '%s' "$sep"; json_str "${f##*/}"
    sep=", "
  done
  printf ']\n    }'
}

write_env() {
  local name R first=1 kernel initrd
  { read -r kernel; read -r initrd; } <"$RIG/guest.paths"
  GUEST_KERNEL=$kernel GUEST_INITRD=$initrd
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
    printf '\n  },\n  "hosts": {\n'
    first=1
    for name in "${HOSTS[@]}"; do
      ((first)) || printf ',\n'
      first=0
      write_host_json "$name"
    done
    printf '\n  },\n  "tls": {"caFile": %s, "pkipath": %s, "rogueCaPkipath": %s, "rogueClientPkipath": %s, "noClientPkipath": %s},\n' \
      "$(json_str "$RIG/pki/ca/cacert.pem")" "$(json_str "$RIG/pki/client")" "$(json_str "$RIG/pki/rogue-ca")" \
      "$(json_str "$RIG/pki/rogue-client")" "$(json_str "$RIG/pki/no-client")"
    printf '  "ssh": {"user": "root", "keyfile": %s, "knownHosts": %s, "emptyKnownHosts": %s},\n' \
      "$(json_str "$RIG/ssh/id_ed25519")" "$(json_str "$RIG/ssh/known_hosts")" "$(json_str "$RIG/ssh/empty_known_hosts")"
    printf '  "guest": {"kernel": %s, "initrd": %s}\n}\n' "$(json_str "$kernel")" "$(json_str "$initrd")"
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
    for name in "${HOSTS[@]}"; do
      host_uris "$name"
      printf 'export RCLOUD_TEST_%s_URI=%q\n' "${name^^}" "${URI[${HOST_TRANSPORT[$name]}]}"
    done
  } >"$RIG/env.sh.tmp"
  mv -f "$RIG/env.sh.tmp" "$RIG/env.sh"
}

instance_up() {
  [[ -f "$(idir "$1")/port" && -n "$(libvirtd_pid "$1")" && -n "$(virtlogd_pid "$1")" ]] &&
    { ! is_host "$1" || [[ -n "$(sshd_pid "$1")" ]]; }
}

# --- commands ----------------------------------------------------------------

cmd_up() {
  local t0=$SECONDS name todo=() p
  if [[ -f $RIG/env.json ]]; then
    for name in "${ALL[@]}"; do instance_up "$name" || todo+=("$name"); done
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
  # The hosts' images directories start with the tiny bootable disk.
  if [[ -n ${RCLOUD_TEST_DISK_IMAGE:-} ]]; then echo "$RCLOUD_TEST_DISK_IMAGE" >"$RIG/disk.paths"; else "$HERE/disk-image.sh" >"$RIG/disk.paths"; fi
  rig_pki
  rig_ssh_keys

  # Every port first (hosts take three: tcp, tls, ssh), then the instances.
  TAKEN_PORTS=""
  declare -gA PORTS=()
  snapshot_listening
  p=$PORT_BASE
  local k
  for name in "${ALL[@]}"; do
    for k in tcp $(is_host "$name" && echo tls ssh); do
      p="$(pick_port "$p")"
      TAKEN_PORTS+=" $p"
      PORTS[$name.$k]=$p
      ((p++))
    done
  done
  LISTENING=""
  for name in "${ALL[@]}"; do prepare_instance "$name" "${PORTS[$name.tcp]}"; done
  local failed=0
  if compgen -G "$CAPS_CACHE/*.xml" >/dev/null; then
    # Warm: start all at once.
    for name in "${ALL[@]}"; do launch_instance "$name"; done
    for name in "${ALL[@]}"; do wait_instance "$name" || failed=1; done
  else
    # Cold: let main probe qemu alone, then seed the others with its cache
    # (probing in three daemons at once takes ~3x as long on 2 cores).
    launch_instance main
    if wait_instance main; then
      save_caps_cache
      for name in "${ALL[@]:1}"; do launch_instance "$name"; done
      for name in "${ALL[@]:1}"; do wait_instance "$name" || failed=1; done
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
    stop_pids $(virtlogd_pid "$name") $(sshd_pid "$name")
  fi
}

cmd_down() {
  local name R pids=() ns=() p n
  [[ -d $RIG ]] || return 0
  for name in "${ALL[@]}"; do
    R="$(idir "$name")"
    [[ -d $R ]] || continue
    for p in $(libvirtd_pid "$name") $(virtlogd_pid "$name") $(sshd_pid "$name") $(qemu_pids "$name") \
      $(pid_of "$R/launcher.pid" '^(libvirtd|tini|unshare|start\.sh|bash)$'); do
      pids+=("$p")
      n="$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" && ns+=("$n")
    done
  done
  # Order: daemons first so nothing restarts guests, then everything else that
  # lives in our namespaces (qemu, helpers).
  local daemons=() rest=()
  for name in "${ALL[@]}"; do daemons+=($(libvirtd_pid "$name")); done
  stop_pids "${daemons[@]}"
  ((${#ns[@]})) && rest+=($(pids_in_ns "${ns[@]}"))
  stop_pids "${pids[@]}" "${rest[@]}"
  # Namespaces die with their last process, taking their mounts along.
  for name in "${ALL[@]}"; do
    R="$(idir "$name")"
    [[ -f $R/libvirtd.conf ]] && rm -rf "$R"
  done
  rm -f "$RIG/env.json" "$RIG/env.sh" "$RIG/guest.paths" "$RIG/disk.paths"
  [[ -f $RIG/pki/ca/cacert.pem ]] && rm -rf "$RIG/pki"
  [[ -f $RIG/ssh/id_ed25519 ]] && rm -rf "$RIG/ssh"
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
  for name in "${ALL[@]}"; do
    R="$(idir "$name")"
    local lp vp
    lp="$(libvirtd_pid "$name")"
    vp="$(virtlogd_pid "$name")"
    st=""
    [[ -n $lp ]] && [[ "$(awk '{print $3}' "/proc/$lp/stat")" == T ]] && st=" (STOPPED)"
    printf '%-7s port=%s socket=%s libvirtd=%s%s virtlogd=%s qemu=[%s]\n' "$name" \
      "$(cat "$R/port" 2>/dev/null)" "$(has_sock "$name" && sock_path "$name" || echo -)" \
      "${lp:-dead}" "$st" "${vp:-dead}" "$(qemu_pids "$name" | xargs)"
    if is_host "$name"; then
      printf '        hostname=%s tls=%s ssh=%s sshd=%s\n' "$(host_name "$name")" "$(cat "$R/tls_port")" \
        "$(cat "$R/ssh_port")" "$(sshd_pid "$name" | grep . || echo dead)"
    fi
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
  *) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
