# shellcheck shell=bash
# Copies of router/ for the roles (WEAVE_ROUTER_SOURCE), as scripts/upgrade-test and scripts/test-collection
# (systemd upgrade) take them: from the working tree or a commit, and "new" versions with a bumped version
# string, which the role sees as a new build (a new fingerprint: reinstall, then weave_router's upgrade).

router_source() {  # router_source DEST [COMMIT]: router/'s pyproject, setup.py (the C lane), README and src (no caches)
  local dest=$1 commit=${2:-} extra=()
  mkdir -p "$dest"
  if [ -n "$commit" ]; then
    # (commits before the C lane have no setup.py)
    git -C "$REPO" cat-file -e "$commit:router/setup.py" 2>/dev/null && extra=(router/setup.py)
    git -C "$REPO" archive "$commit" router/pyproject.toml router/README.md router/src "${extra[@]}" |
      tar -x -C "$dest" --strip-components=1
  else
    cp -a "$REPO/router/pyproject.toml" "$REPO/router/setup.py" "$REPO/router/README.md" "$REPO/router/src" "$dest/"
  fi
  find "$dest" \( -name __pycache__ -o -name '*.egg-info' -o -name '*.so' \) -prune -exec rm -rf {} +
}

router_bump_version() {  # router_bump_version DIR VERSION
  sed -i "s/^version = .*/version = \"$2\"/" "$1/pyproject.toml"
  sed -i "s/^__version__ = .*/__version__ = \"$2\"/" "$1/src/weavenet/__init__.py"
}
