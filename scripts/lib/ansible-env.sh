# shellcheck shell=bash
# Shared by scripts/ansible-lab and scripts/test-collection (sourced, not run).
#
# - ansible_bootstrap: Debian packages (docker.io, debootstrap) and the controller venv .venv-ansible
#   (ansible-core 2.19.x: Python 3.11 cannot run 2.20+; the `ansible` 12 package for community.docker,
#   whose docker connection and modules Molecule's docker driver and the lab use; galaxy is not reachable).
# - lab_dockerd_start/stop: a Docker engine of the lab's own (own socket, data and exec root, no iptables,
#   own network namespace), so the lab neither depends on nor disturbs another engine on this machine.
# - lab_host_image: the host images (debootstrap + docker.io, python3, iproute2, ...), built once each:
#   Debian 12 (bookworm, Python 3.11) and Debian 13 (trixie, Python 3.13), so a mesh mixes hosts whose
#   Python differs from the controller's (the install resolves wheels per host).
# - lab_hosts_up/down: 3 Docker-in-Docker hosts on 198.51.100.0/26 (TEST-NET-2; lab-host3 is Debian 13). Not 192.0.2.0/24: on
#   these machines eth0 itself is 192.0.2.2/24 with the gateway 192.0.2.1, and the package registries
#   answer on 203.0.113.80; a bridge on either range cuts the machine off. lab_subnet_safe checks.

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
ANSIBLE_VENV=${ANSIBLE_VENV:-$REPO/.venv-ansible}
LAB_STATE=${WEAVE_LAB_STATE:-/var/lib/weavenet-ansible-lab}
LAB_RUN=${WEAVE_LAB_RUN:-/run/weavenet-ansible-lab}
LAB_SOCK=$LAB_RUN/docker.sock
LAB_IMAGE=weavenet-lab-host                 # Debian 12 (bookworm)
LAB_IMAGE_TRIXIE=weavenet-lab-host-trixie   # Debian 13 (trixie)
LAB_NET=weavenet-lab
LAB_SUBNET=198.51.100.0/26
LAB_GATEWAY=198.51.100.1
MOLECULE_SUBNET=198.51.100.64/26   # extensions/molecule/default/molecule.yml
SYSTEMD_SUBNET=198.51.100.128/26   # tests/playbooks/systemd
LAB_HOSTS=(lab-host1 lab-host2 lab-host3)
LAB_IPS=(198.51.100.11 198.51.100.12 198.51.100.13)
LAB_HOST_IMAGES=("$LAB_IMAGE" "$LAB_IMAGE" "$LAB_IMAGE_TRIXIE")
# Docker-in-Docker without --privileged (it fails here: CAP_SYS_RESOURCE is not in the bounding set).
LAB_RUN_FLAGS=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
  --security-opt apparmor=unconfined --security-opt systempaths=unconfined -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /tmp
  --device /dev/net/tun -v /var/lib/docker --label weavenet-lab=1)
PIP_PINS=("ansible-core==2.19.*" "ansible==12.*" "molecule==26.*" "molecule-plugins[docker]==26.*"
  "pytest-testinfra==10.*" "docker>=7,<8" mock pytest-mock pytest-xdist)

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

ansible_bootstrap() {
  local need=()
  command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
  python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  [ -x "$ANSIBLE_VENV/bin/python" ] || python3 -m venv "$ANSIBLE_VENV"
  local stamp=$ANSIBLE_VENV/.weavenet-stamp want
  want=$(printf '%s\n' "${PIP_PINS[@]}" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing ansible-core 2.19, molecule and friends into $ANSIBLE_VENV"
    "$ANSIBLE_VENV/bin/pip" install -q --upgrade pip >&2
    "$ANSIBLE_VENV/bin/pip" install -q "${PIP_PINS[@]}" >&2
    echo "$want" >"$stamp"
  fi
}

ldocker() { docker -H "unix://$LAB_SOCK" "$@"; }

# The lab's dockerd runs in a network namespace of its own. Started in the root namespace with
# --bridge=none it deleted the machine's docker0: at startup dockerd removes the default bridge interface
# when the bridge is disabled (moby daemon_unix.go configureNetworking -> removeDefaultBridgeInterface,
# a plain LinkDel of "docker0", whoever owns it), which cut off the containers of the machine's own
# engine. In its own namespace there is no docker0 to delete, and its bridges (the lab networks) never
# meet the machine's routes. nsenter switches only the network namespace (`ip netns exec` would also
# remount /sys and hide the cgroup tree dockerd needs). The Docker API stays a unix socket.
LAB_NETNS=weavenet-ansible-lab

lab_dockerd_pid() {  # the pid of the lab's dockerd, if it runs (never a reused pid of something else)
  local pid
  pid=$(cat "$LAB_RUN/docker.pid" 2>/dev/null) || return 1
  grep -qs dockerd "/proc/$pid/comm" && echo "$pid"
}

lab_dockerd_in_netns() {  # is the lab's dockerd (pid $1) in the lab's network namespace?
  [ -e "/run/netns/$LAB_NETNS" ] && [ "$(stat -L -c %i "/proc/$1/ns/net" 2>/dev/null)" = "$(stat -L -c %i "/run/netns/$LAB_NETNS")" ]
}

lab_close_fds() {  # close every descriptor above 2 of this (sub)shell
  local fd
  for fd in $(ls "/proc/$BASHPID/fd"); do
    if ((fd > 2)); then eval "exec $fd>&-"; fi
  done
}

lab_dockerd_start() {
  mkdir -p "$LAB_RUN" "$LAB_STATE/docker"
  local pid
  if pid=$(lab_dockerd_pid) && ! lab_dockerd_in_netns "$pid"; then
    log "the lab's dockerd (pid $pid) runs in the machine's network namespace (an older lab): restarting it"
    lab_dockerd_stop
  fi
  if ldocker version >/dev/null 2>&1; then return 0; fi
  # a pid file left by a killed session would make dockerd refuse to start
  lab_dockerd_pid >/dev/null || rm -f "$LAB_RUN/docker.pid"
  [ -e "/run/netns/$LAB_NETNS" ] || ip netns add "$LAB_NETNS"
  ip -n "$LAB_NETNS" link set lo up
  log "starting the lab's Docker engine ($LAB_SOCK, network namespace $LAB_NETNS)"
  # --iptables=false: its rules (FORWARD policy DROP) are not needed; the lab hosts need no NAT.
  # Inherited descriptors closed: a `flock /tmp/weave-docker-lab.lock` around the caller would otherwise
  # stay held by dockerd for as long as it runs.
  (lab_close_fds; exec nohup nsenter "--net=/run/netns/$LAB_NETNS" dockerd --host "unix://$LAB_SOCK" --data-root "$LAB_STATE/docker" \
    --exec-root "$LAB_RUN/exec" --pidfile "$LAB_RUN/docker.pid" --iptables=false --ip6tables=false --bridge=none \
    >"$LAB_STATE/dockerd.log" 2>&1) &
  local i
  for i in $(seq 1 60); do
    ldocker version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "the lab's dockerd did not start; see $LAB_STATE/dockerd.log"
  tail -5 "$LAB_STATE/dockerd.log" >&2
  return 1
}

lab_dockerd_stop() {
  local pid
  if pid=$(lab_dockerd_pid); then
    log "stopping the lab's Docker engine (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$LAB_RUN/docker.pid"
  if [ -e "/run/netns/$LAB_NETNS" ]; then ip netns del "$LAB_NETNS" 2>/dev/null || true; fi
}

lab_host_image() {  # both host images; the root file systems are built in parallel (~2.5 min each, once)
  local pids=() rc=0 p
  lab_suite_rootfs bookworm rootfs & pids+=($!)
  lab_suite_rootfs trixie rootfs-trixie & pids+=($!)
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  ((rc == 0)) || return 1
  lab_suite_image "$LAB_IMAGE" rootfs && lab_suite_image "$LAB_IMAGE_TRIXIE" rootfs-trixie
}

# lab_suite_rootfs SUITE DIR: debootstrap SUITE into $LAB_STATE/DIR unless done with the same package list
# (kept: images are imported from it). Debian 13 ships the docker CLI apart (docker-cli, only recommended).
lab_suite_rootfs() {
  local suite=$1 root=$LAB_STATE/$2
  local pkgs=python3,python3-venv,iproute2,nftables,iptables,iputils-ping,docker.io,busybox-static,procps,ca-certificates
  [ "$suite" = bookworm ] || pkgs+=,docker-cli
  [ -e "$root/.complete" ] && [ "$(cat "$root/.complete")" = "$pkgs" ] && return 0
  [ -e "$root/.complete" ] && [ "$suite" = bookworm ] && [ ! -s "$root/.complete" ] && return 0  # built before the list was recorded
  log "building the $suite host root file system (debootstrap: a few minutes, once)"
  rm -rf "$root.tmp"
  debootstrap --variant=minbase --include="$pkgs" "$suite" "$root.tmp" http://deb.debian.org/debian \
    >"$LAB_STATE/debootstrap-$suite.log" 2>&1 || { tail -5 "$LAB_STATE/debootstrap-$suite.log" >&2; return 1; }
  rm -rf "$root"
  mv "$root.tmp" "$root"
  echo "$pkgs" >"$root/.complete"
}

# lab_suite_image IMAGE DIR: import $LAB_STATE/DIR as IMAGE unless it carries this lab-host-init already
lab_suite_image() {
  local image=$1 root=$LAB_STATE/$2 init_sum
  # the image says which lab-host-init and package list it was made from
  init_sum=$(cat "$REPO/scripts/lib/lab-host-init" "$root/.complete" | sha256sum | cut -c1-16)
  if [ "$(ldocker image inspect -f '{{index .Config.Labels "weavenet.init"}}' "$image" 2>/dev/null)" = "$init_sum" ]; then
    return 0
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  install -m 0755 "$REPO/scripts/lib/lab-host-init" "$root/usr/local/sbin/lab-host-init"
  log "importing the host image $image"
  tar -C "$root" -c . | ldocker import -c 'CMD ["/usr/local/sbin/lab-host-init"]' \
    -c "LABEL weavenet.init=$init_sum" - "$image" >/dev/null
}

# The same host with systemd as PID 1 (tests the roles' systemd unit): systemd added in a chroot of the
# host root file system, dockerd configured for vfs without iptables through daemon.json.
LAB_SYSTEMD_IMAGE=weavenet-lab-host-systemd
lab_systemd_image() {
  lab_host_image || return 1
  local root=$LAB_STATE/rootfs sd=$LAB_STATE/rootfs-systemd
  if ldocker image inspect "$LAB_SYSTEMD_IMAGE" >/dev/null 2>&1; then return 0; fi
  if [ ! -e "$sd/.complete" ]; then
    log "adding systemd to a copy of the host root file system"
    rm -rf "$sd"
    cp -a "$root" "$sd"
    cp /etc/resolv.conf "$sd/etc/resolv.conf"
    mount -t proc proc "$sd/proc"
    chroot "$sd" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd systemd-sysv dbus' \
      >"$LAB_STATE/systemd-install.log" 2>&1
    local rc=$?
    umount "$sd/proc"
    ((rc == 0)) || { tail -5 "$LAB_STATE/systemd-install.log" >&2; return 1; }
    mkdir -p "$sd/etc/docker"
    echo '{"storage-driver": "vfs", "iptables": false, "ip6tables": false}' >"$sd/etc/docker/daemon.json"
    rm -rf "$sd"/var/cache/apt/archives/*.deb "$sd"/var/lib/apt/lists/*
    touch "$sd/.complete"
  fi
  log "importing the host image $LAB_SYSTEMD_IMAGE"
  tar -C "$sd" -c . | ldocker import -c 'CMD ["/sbin/init"]' -c 'ENV container=docker' - "$LAB_SYSTEMD_IMAGE" >/dev/null
}

# lab_systemd_hosts_up NAME:IP...: hosts of the systemd image on the network weavenet-sd.
lab_systemd_hosts_up() {
  if ! ldocker network inspect weavenet-sd >/dev/null 2>&1; then
    lab_subnet_safe "$SYSTEMD_SUBNET" || return 1
    ldocker network create --subnet "$SYSTEMD_SUBNET" --gateway 198.51.100.129 weavenet-sd >/dev/null
  fi
  local spec
  for spec in "$@"; do
    ldocker rm -f "${spec%%:*}" >/dev/null 2>&1 || true
    ldocker run -d --name "${spec%%:*}" --hostname "${spec%%:*}" --network weavenet-sd --ip "${spec#*:}" \
      "${LAB_RUN_FLAGS[@]}" --tmpfs /run/lock --stop-signal SIGRTMIN+3 "$LAB_SYSTEMD_IMAGE" >/dev/null || return 1
  done
}

# A subnet for a lab bridge must not overlap this machine's own routes, contain its gateway, or hold the
# addresses its package registries resolve to: the bridge would take that traffic.
lab_subnet_safe() {
  python3 - "$1" <<'PY'
import ipaddress, json, socket, subprocess, sys
net = ipaddress.ip_network(sys.argv[1])
bad = []
for r in json.loads(subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout or "[]"):
    dst, gw = r.get("dst"), r.get("gateway")
    if dst and dst != "default" and ipaddress.ip_network(dst, strict=False).overlaps(net):
        bad.append(f"route {dst} dev {r.get('dev')}")
    if gw and ipaddress.ip_address(gw) in net:
        bad.append(f"gateway {gw}")
for host in ("deb.debian.org", "pypi.org", "files.pythonhosted.org"):
    try:
        for info in socket.getaddrinfo(host, 443, socket.AF_INET):
            if ipaddress.ip_address(info[4][0]) in net:
                bad.append(f"{host} = {info[4][0]}")
    except OSError:
        pass
if bad:
    sys.exit(f"lab: {net} is in use on this machine ({', '.join(sorted(set(bad)))}); a bridge there would cut it off")
PY
}

lab_network_up() {
  if ! ldocker network inspect "$LAB_NET" >/dev/null 2>&1; then
    lab_subnet_safe "$LAB_SUBNET" || return 1
    ldocker network create --subnet "$LAB_SUBNET" --gateway "$LAB_GATEWAY" "$LAB_NET" >/dev/null
  fi
}

lab_hosts_up() {
  lab_network_up
  local i
  for i in "${!LAB_HOSTS[@]}"; do
    local h=${LAB_HOSTS[$i]} image=${LAB_HOST_IMAGES[$i]}
    # kept only while it runs the current build of its image (a rebuilt image replaces it)
    if [ "$(ldocker inspect -f '{{.State.Running}} {{.Image}}' "$h" 2>/dev/null)" = \
      "true $(ldocker image inspect -f '{{.Id}}' "$image" 2>/dev/null)" ]; then continue; fi
    ldocker rm -f "$h" >/dev/null 2>&1 || true
    log "starting host $h (${LAB_IPS[$i]}, $image)"
    ldocker run -d --name "$h" --hostname "$h" --network "$LAB_NET" --ip "${LAB_IPS[$i]}" \
      "${LAB_RUN_FLAGS[@]}" "$image" >/dev/null
  done
}

lab_hosts_down() {
  local ids
  ids=$(ldocker ps -aq --filter label=weavenet-lab=1 2>/dev/null) || true
  # shellcheck disable=SC2086
  [ -z "$ids" ] || ldocker rm -f -v $ids >/dev/null
  ldocker network rm "$LAB_NET" weavenet-sd >/dev/null 2>&1 || true
}
