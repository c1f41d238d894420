#!/usr/bin/env bash
# Tempest's identity v3 tests against a Latchkey started from this checkout, and the
# same selection against Keystone 30 (the benchmark's peer), side by side (`make tempest`).
#
#   scripts/tempest.sh            install if needed, run, print and store the table
#   scripts/tempest.sh install    only install Tempest; prints the venv's path last
#   scripts/tempest.sh table      print the stored table again (docs/tempest/*.json)
#
# Tempest 47.0.0 and python-openstackclient 10.5.0 live in their own virtual
# environment, .venv-tempest (TEMPEST_VENV), apart from Latchkey's and from
# .venv-openstack: a stamp file named after the hash of the pins makes a re-run
# instant; changing a pin (or tests/openstack/tempest-constraints.txt) reinstalls.
#
# Environment (see tests/openstack/tempest_run.py):
#   TEMPEST_DATABASE=sqlite|postgres   Latchkey's database (default sqlite; postgres:
#                                      a database of its own at 127.0.0.1:5432, dropped after)
#   TEMPEST_PEER=keystone|none         also run Keystone 30 (default keystone; none keeps
#                                      the stored Keystone column)
#   TEMPEST_TARGETS=latchkey,keystone  what to run (overrides the two above)
#   TEMPEST_REGEX=...                  the selection (default: identity v3 and admin v3)
#   TEMPEST_CONCURRENCY=1              tempest's workers
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${TEMPEST_VENV:-$ROOT/.venv-tempest}
PYTHON=${PYTHON:-python3}
CONSTRAINTS=$ROOT/tests/openstack/tempest-constraints.txt
LATCHKEY_PYTHON=${LATCHKEY_PYTHON:-$ROOT/.venv/bin/python}

PINS=(
  "tempest==47.0.0"
  "python-openstackclient==10.5.0"
)

log() { echo "tempest: $*" >&2; }

install() {
  local stamp_key stamp start
  stamp_key=$( { printf '%s\n' "${PINS[@]}"; cat "$CONSTRAINTS" 2>/dev/null || true; } \
    | sha256sum | cut -c1-16)
  stamp=$VENV/.installed-$stamp_key
  [ -f "$stamp" ] && { echo "$VENV"; return 0; }
  # One installer at a time (parallel test sessions share the venv).
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock 9
  [ -f "$stamp" ] && { echo "$VENV"; return 0; }
  # A venv made by hand with exactly the pins (no stamp) is used as it is.
  if "$VENV/bin/python" - "${PINS[@]}" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    assert version(name) == wanted, pin
PY
  then
    echo "$VENV"
    return 0
  fi
  start=$(date +%s)
  log "creating $VENV (tempest, python-openstackclient; a few minutes, once)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  local constraint_args=()
  [ -f "$CONSTRAINTS" ] && constraint_args=(--constraint "$CONSTRAINTS")
  "$VENV/bin/pip" install --quiet --no-input --disable-pip-version-check \
    "${constraint_args[@]}" "${PINS[@]}" >&2
  for tool in tempest stestr openstack; do
    [ -x "$VENV/bin/$tool" ] || { log "no $tool command in $VENV/bin"; exit 1; }
  done
  touch "$stamp"
  log "installed in $(( $(date +%s) - start )) s"
  echo "$VENV"
}

need_latchkey_python() {
  [ -x "$LATCHKEY_PYTHON" ] && return 0
  log "no $LATCHKEY_PYTHON: run \`make venv\` (or \`make tempest\`), or set LATCHKEY_PYTHON"
  exit 1
}

case "${1:-run}" in
  install)
    install
    ;;
  table)
    need_latchkey_python
    cd "$ROOT" && exec "$LATCHKEY_PYTHON" -m tests.openstack.tempest_run table
    ;;
  run)
    need_latchkey_python
    install >/dev/null
    if [ "${TEMPEST_DATABASE:-sqlite}" = postgres ]; then
      bash "$ROOT/scripts/ensure-services.sh" >&2
    fi
    cd "$ROOT" && TEMPEST_VENV=$VENV exec "$LATCHKEY_PYTHON" -m tests.openstack.tempest_run run
    ;;
  *)
    echo "usage: $0 [run|install|table]" >&2
    exit 2
    ;;
esac
