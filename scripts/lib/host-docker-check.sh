# shellcheck shell=bash
# The lab must leave the machine's own Docker engine alone (issue #14 item 8: the lab's dockerd, started
# with --bridge=none in the root network namespace, deleted the machine's docker0). Sourced by
# scripts/test-collection after scripts/lib/ansible-env.sh.
#
# host_docker_check: start the machine's engine (the normal /var/run/docker.sock one) unless it runs, run
# a container on it, then start the lab's engine and its hosts, remove them and stop the engine, and check
# that docker0 is the same interface, the container still reaches its gateway, and a new container starts
# and reaches the first one. Stops only what it started.

HOST_DOCKER_IMAGE=weavenet/busybox:latest   # the image router/src/weavenet/lab/docker.py imports too
HOST_DOCKER_PROBE=weavenet-docker0-probe

hdocker() { docker -H unix:///var/run/docker.sock "$@"; }

host_busybox_image() {  # import a static busybox (nothing can be pulled here)
  hdocker image inspect "$HOST_DOCKER_IMAGE" >/dev/null 2>&1 && return 0
  local d
  d=$(mktemp -d)
  mkdir -p "$d/bin" "$d/etc" "$d/tmp" "$d/proc" "$d/sys" "$d/dev" "$d/root"
  cp /bin/busybox "$d/bin/busybox"
  local a
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
  echo 'root:x:0:' >"$d/etc/group"
  tar -C "$d" -c . | hdocker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$HOST_DOCKER_IMAGE" >/dev/null
  local rc=$?
  rm -rf "$d"
  return $rc
}

host_docker_check() {
  local started_host=0 host_pid="" rc=0 log_dir
  log_dir=$(mktemp -d /tmp/weavenet-host-dockerd.XXXXXX)
  if ! hdocker version >/dev/null 2>&1; then
    # as router/src/weavenet/lab/docker.py starts it for the router's tests (no iptables: its FORWARD
    # DROP policy would leak into this machine's other namespace tests)
    setsid dockerd --iptables=false --ip6tables=false >"$log_dir/dockerd.log" 2>&1 &
    host_pid=$!
    started_host=1
    for _ in $(seq 1 60); do hdocker version >/dev/null 2>&1 && break; sleep 0.5; done
    hdocker version >/dev/null 2>&1 || { echo "the machine's dockerd did not start" >&2; tail -5 "$log_dir/dockerd.log" >&2; rc=1; }
  fi
  local idx_before="" gw="" probe_ip="" lab_was_up=0
  if ((rc == 0)); then
    host_busybox_image || rc=1
    hdocker rm -f "$HOST_DOCKER_PROBE" "$HOST_DOCKER_PROBE-2" >/dev/null 2>&1 || true
    if ((rc == 0)) && hdocker run -d --name "$HOST_DOCKER_PROBE" "$HOST_DOCKER_IMAGE" sleep 3600 >/dev/null; then
      idx_before=$(cat /sys/class/net/docker0/ifindex)
      gw=$(hdocker inspect -f '{{.NetworkSettings.Gateway}}' "$HOST_DOCKER_PROBE")
      probe_ip=$(hdocker inspect -f '{{.NetworkSettings.IPAddress}}' "$HOST_DOCKER_PROBE")
      hdocker exec "$HOST_DOCKER_PROBE" ping -c 1 -W 2 "$gw" >/dev/null \
        || { echo "before the lab: the probe container cannot reach its gateway $gw" >&2; rc=1; }
    else
      rc=1
    fi
  fi
  if ((rc == 0)); then
    if ldocker version >/dev/null 2>&1; then
      lab_was_up=1
      log "the lab's engine already runs: its startup is not exercised here (scripts/ansible-lab down first)"
    fi
    log "lab up (engine and hosts) and down, with a container running on the machine's engine"
    { lab_dockerd_start && lab_host_image && lab_hosts_up && lab_hosts_down; } || rc=1
    ((lab_was_up)) || lab_dockerd_stop
    local idx_after
    idx_after=$(cat /sys/class/net/docker0/ifindex 2>/dev/null) || true
    if [ "$idx_after" != "$idx_before" ]; then
      echo "the machine's docker0 was deleted or replaced (ifindex $idx_before -> ${idx_after:-none})" >&2
      rc=1
    fi
    hdocker exec "$HOST_DOCKER_PROBE" ping -c 1 -W 2 "$gw" >/dev/null \
      || { echo "after the lab: the probe container lost its network (gateway $gw unreachable)" >&2; rc=1; }
    hdocker run --rm --name "$HOST_DOCKER_PROBE-2" "$HOST_DOCKER_IMAGE" ping -c 1 -W 2 "$probe_ip" >/dev/null \
      || { echo "after the lab: a new container cannot start or cannot reach $probe_ip" >&2; rc=1; }
    ((rc)) || echo "the machine's engine kept docker0 (ifindex $idx_before), its container's network, and starts new ones"
  fi
  hdocker rm -f "$HOST_DOCKER_PROBE" "$HOST_DOCKER_PROBE-2" >/dev/null 2>&1 || true
  if ((started_host)); then
    kill -- "-$host_pid" 2>/dev/null || kill "$host_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$host_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -rf "$log_dir"
  return $rc
}
