#!/usr/bin/env bash
# What the monitoring tests need beyond the venv: Debian's Prometheus (prometheus, promtool) and
# Chromium (headless browser test of the status page). Installs them when missing and root; otherwise
# says what is missing (the tests that need them are skipped with the same message).
#   bash scripts/test-deps.sh      (make test runs it)
set -euo pipefail
want=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || want+=(prometheus)
command -v chromium >/dev/null || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "test-deps: missing ${want[*]}: run as root: apt-get install -y ${want[*]}" >&2
  exit 0
fi
echo "test-deps: installing ${want[*]} from Debian (about 1-2 min) ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
# Debian's package starts a prometheus service on :9090 where an init system runs; the tests run their own.
systemctl disable --now prometheus >/dev/null 2>&1 || true
echo "test-deps: installed ${want[*]}" >&2
