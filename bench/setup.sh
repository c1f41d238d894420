#!/usr/bin/env bash
# What `make bench` needs besides Latchkey's virtualenv: wrk (the load generator),
# PostgreSQL and slapd (scripts/ensure-services.sh), memcached (Keystone's cache),
# py-spy when BENCH_PROFILE names scenarios to profile. Keystone's own virtualenv
# (bench/.venv-keystone) is made by bench/keystone_side.py on the first full run.
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ "${BENCH_QUICK:-}" != "1" ]; then
  command -v memcached >/dev/null 2>&1 || missing+=(memcached)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]} from Debian's packages"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

bash scripts/ensure-services.sh

if [ -n "${BENCH_PROFILE:-}" ] && [ ! -x .venv/bin/py-spy ]; then
  .venv/bin/pip install --quiet "py-spy>=0.4"
fi
