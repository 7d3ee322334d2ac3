# shellcheck shell=bash
# The collection's packaging and controller-side checks, sourced by scripts/test-collection (after
# scripts/lib/ansible-env.sh, which defines REPO, ANSIBLE_VENV and log):
# - lint_bootstrap: ansible-lint, antsibull-docs and antsibull-changelog in .venv-ansible (only the
#   collection tests need them, so the lab does not install them)
# - built_tree DIR: the tarball as `ansible-galaxy collection build` makes it, unpacked at
#   DIR/ansible_collections/weavenet/mesh: sanity, units and the docs lint look at what Galaxy users get
#   (router/ included)
# - run_lint: ansible-lint --profile production (.ansible-lint) on the collection's source
# - run_docs: antsibull-docs lint-collection-docs --plugin-docs on the built collection
# - run_playbook_checks: tests/playbooks on the controller (peers, variable checks, hosts down)

LINT_PINS=("ansible-core==2.19.*" "ansible-lint==26.*" "antsibull-docs==2.*" "antsibull-changelog==0.*")

lint_bootstrap() {
  local stamp=$ANSIBLE_VENV/.weavenet-lint-stamp want
  want=$(printf '%s\n' "${LINT_PINS[@]}" | sha256sum | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
  log "installing ansible-lint, antsibull-docs and antsibull-changelog into $ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/pip" install -q "${LINT_PINS[@]}" >&2 && echo "$want" >"$stamp"
}

built_tree() {  # built_tree DIR: prints the unpacked collection's path
  local top=$1 dest=$1/ansible_collections/weavenet/mesh
  if [ ! -e "$dest/MANIFEST.json" ]; then
    rm -rf "$top" && mkdir -p "$top/dist" "$dest"
    "$ANSIBLE_VENV/bin/ansible-galaxy" collection build --force --output-path "$top/dist" "$REPO" >&2 || return 1
    tar -C "$dest" -xzf "$top"/dist/weavenet-mesh-*.tar.gz || return 1
  fi
  echo "$dest"
}

run_lint() {
  (cd "$REPO" && PATH="$ANSIBLE_VENV/bin:$PATH" ANSIBLE_CONFIG="$REPO/ansible.cfg" "$ANSIBLE_VENV/bin/ansible-lint" \
    --nocolor -f pep8 --profile production)
}

run_docs() {
  (cd "$1" && PATH="$ANSIBLE_VENV/bin:$PATH" "$ANSIBLE_VENV/bin/antsibull-docs" lint-collection-docs --plugin-docs .)
}

run_playbook_checks() {
  local pb=("$ANSIBLE_VENV/bin/ansible-playbook") log=$1/playbook-checks.log rc
  export ANSIBLE_CONFIG="$REPO/ansible.cfg" ANSIBLE_FORCE_COLOR=0
  (cd "$REPO" &&
    "${pb[@]}" -i tests/playbooks/two-meshes/hosts.yml tests/playbooks/two-meshes/check.yml &&
    "${pb[@]}" -i tests/playbooks/validation/hosts.yml tests/playbooks/validation/check.yml) || return 1
  # hosts down: a1 fails on purpose (ansible-playbook exits 2); every other host must pass
  (cd "$REPO" && "${pb[@]}" -i tests/playbooks/two-meshes/hosts.yml tests/playbooks/two-meshes/down.yml) | tee "$log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" != 2 ] || grep -E '^[a-z0-9]+ +:.*failed=[1-9]' "$log" | grep -vq '^a1 '; then
    echo "two-meshes/down.yml: exit $rc, or a host other than a1 failed" >&2
    return 1
  fi
}

only_host_down() {  # only_host_down HOST LOG: in site.yml's output, HOST alone failed or was unreachable, and
  # the summary names it
  local host=$1 log=$2 ok=0
  grep -E "^$host +:.*(unreachable|failed)=[1-9]" "$log" >/dev/null || { echo "$log: $host is not reported down" >&2; ok=1; }
  if grep -E '^[a-z0-9-]+ +:.*(unreachable|failed)=[1-9]' "$log" | grep -v "^$host "; then
    echo "$log: another host than $host failed" >&2
    ok=1
  fi
  grep -Eq "Not deployed \(unreachable or failed, see above\): $host[\"']" "$log" ||
    { echo "$log: the summary does not name $host" >&2; ok=1; }
  return $ok
}

launch_failures_reported() {  # launch_failures_reported LOG HOST...: each host's failed launch was rescued (so the
  # serial play went on to the next host) and the host failed before its containers, by name
  local log=$1 host ok=0
  shift
  for host in "$@"; do
    grep -q "weave did not launch on $host: " "$log" || { echo "$log: no launch failure reported for $host" >&2; ok=1; }
  done
  return $ok
}
