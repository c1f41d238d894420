#!/usr/bin/env bash
# Install Barbican 23.0.0 into its own virtual environment, .venv-barbican, for the
# tests (tests/barbican_server.py serves it). Idempotent: a marker file records a
# finished install, and a lock keeps `make services` and a test fixture from
# installing at the same time. Barbican never enters Latchkey's own environment:
# its OpenStack dependencies would pin much of ours.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${LATCHKEY_BARBICAN_VENV:-.venv-barbican}
VERSION=23.0.0
MARKER="$VENV/.installed-barbican-$VERSION"

log() { echo "barbican.sh: $*" >&2; }

[ -f "$MARKER" ] && exit 0

exec 9>"$VENV.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi
[ -f "$MARKER" ] && exit 0  # another process finished while this one waited

log "installing barbican==$VERSION into $VENV (about 30 s)"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip </dev/null
"$VENV/bin/python" -m pip install --quiet "barbican==$VERSION" </dev/null
"$VENV/bin/python" -W ignore -c "import barbican.api.app, paste.deploy" \
  || { log "barbican does not import"; exit 1; }
touch "$MARKER"
log "barbican $VERSION ready in $VENV"
