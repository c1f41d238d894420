#!/usr/bin/env bash
# Install the real OpenStack clients that tests/integration/test_openstack_clients.py
# drives (keystonemiddleware's auth_token and python-openstackclient) into their own
# virtual environment, kept apart from Latchkey's: they pull in oslo.* and about
# 80 other packages that Latchkey itself never imports.
#
#   scripts/openstack-clients.sh [VENV]     (default: .venv-openstack in the repository)
#
# Idempotent: a stamp file named after the hash of the pins makes a re-run
# instant; changing a pin (or tests/openstack/constraints.txt) reinstalls.
# Needs only Python 3.11/3.12 and the package index. Prints the venv's path last.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$ROOT/.venv-openstack}
PYTHON=${PYTHON:-python3}
CONSTRAINTS=$ROOT/tests/openstack/constraints.txt

# The two clients under test, pinned exactly (verified against Latchkey); every
# other package is pinned by the constraints file (a `pip freeze` of a working set).
PINS=(
  "keystonemiddleware==13.0.1"
  "python-openstackclient==10.5.0"
)

log() { echo "openstack-clients: $*" >&2; }

stamp_key=$( { printf '%s\n' "${PINS[@]}"; cat "$CONSTRAINTS" 2>/dev/null || true; } \
  | sha256sum | cut -c1-16)
STAMP=$VENV/.installed-$stamp_key

if [ -f "$STAMP" ]; then
  echo "$VENV"
  exit 0
fi

# One installer at a time (parallel test sessions share the venv).
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
if [ -f "$STAMP" ]; then
  echo "$VENV"
  exit 0
fi

start=$(date +%s)
log "creating $VENV (keystonemiddleware, python-openstackclient)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
constraint_args=()
[ -f "$CONSTRAINTS" ] && constraint_args=(--constraint "$CONSTRAINTS")
"$VENV/bin/pip" install --quiet --no-input --disable-pip-version-check \
  "${constraint_args[@]}" "${PINS[@]}" >&2
"$VENV/bin/python" -c "import keystonemiddleware.auth_token, openstackclient" >&2
[ -x "$VENV/bin/openstack" ] || { log "no openstack command in $VENV/bin"; exit 1; }
touch "$STAMP"
log "installed in $(( $(date +%s) - start )) s"
echo "$VENV"
