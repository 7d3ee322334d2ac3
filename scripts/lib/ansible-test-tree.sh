# shellcheck shell=bash
# ansible-test needs the collection at .../ansible_collections/weavenet/mesh and, offline, its get-pip
# bootstrap script in its cache. Sourced by scripts/test-collection after scripts/lib/ansible-env.sh.

# Copy the collection's Ansible content into $1/ansible_collections/weavenet/mesh (router/ is the Python
# package the roles install; it has its own lint and tests, so sanity does not look at it).
collection_tree() {
  local top=$1 dest=$1/ansible_collections/weavenet/mesh
  rm -rf "$top"
  mkdir -p "$dest"
  (cd "$REPO" && cp -a galaxy.yml README.md meta plugins roles playbooks inventories extensions "$dest/")
  mkdir -p "$dest/tests"
  tar -C "$REPO/tests" --exclude=./output -c . | tar -C "$dest/tests" -x
  find "$dest" \( -name __pycache__ -o -name .pytest_cache -o -name .cache \) -prune -exec rm -rf {} +
  echo "$dest"
}

# ansible-test bootstraps pip in its sanity/units venvs with get-pip-<version>.py downloaded from
# ci-files.testing.ansible.com (not reachable here). It looks in ~/.ansible/test/cache/get_pip_<v>.py
# first and runs it as `python get_pip_<v>.py [pip options] pip==<v> --no-setuptools --no-wheel`.
# Seed that cache with a small stand-in that installs from the pip wheel of that version (from PyPI).
seed_get_pip() {
  local py=$ANSIBLE_VENV/bin/python ver cache
  ver=$("$py" - <<'PY'
import re, ansible_test._internal.python_requirements as r, inspect
m = re.search(r"pip='([0-9.]+)'", inspect.getsource(r.get_venv_packages))
print(m.group(1))
PY
)
  cache=$HOME/.ansible/test/cache
  mkdir -p "$cache"
  local script=$cache/get_pip_${ver//./_}.py
  if [ -s "$script" ] && ls "$cache"/pip-"$ver"-*.whl >/dev/null 2>&1; then return 0; fi
  "$ANSIBLE_VENV/bin/pip" download -q --no-deps --only-binary=:all: -d "$cache" "pip==$ver" >&2
  local whl
  whl=$(ls "$cache"/pip-"$ver"-*.whl | head -n 1)
  cat >"$script" <<PY
# Stand-in for get-pip.py $ver (written by weavenet's scripts/lib/ansible-test-tree.sh): installs pip
# from its wheel, which pip runs from directly.
import sys
sys.path.insert(0, "$whl")
from pip._internal.cli.main import main  # noqa: E402
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
PY
  log "seeded ansible-test's get-pip cache: $script"
}
