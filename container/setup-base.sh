#!/bin/sh
# Prepare a Debian/Ubuntu image for minerfleet (run as root by the Dockerfile's base stages):
#   - trust the extra CA certificates in /tmp/certs/*.crt (the build context's certs/),
#   - install what is missing of: Python 3.11 with venv, libgomp1 (llama.cpp), ca-certificates,
#     plus the packages named as arguments (apt only when something is missing),
#   - create the virtual environment /opt/venv (owned by root) and make /app, where the code goes,
#     importable from it (a .pth file: what an editable install does, without a build step),
#   - create the unprivileged user `miner` (uid/gid 1000, HOME /home/miner).
# Works on the local debootstrap base (minerfleet/base:bookworm: all there, no apt at all),
# debian:bookworm-slim (Debian's python3.11), python:3.11-slim-bookworm (python.org's Python in
# /usr/local; only libgomp1 is missing) and nvidia/cuda:*-ubuntu22.04 (python3.11 from universe).
set -eu

PYTHON=${PYTHON:-python3.11}
VENV=/opt/venv
APP=/app
UID_=${MINER_UID:-1000}

if ls /tmp/certs/*.crt >/dev/null 2>&1; then
  mkdir -p /usr/local/share/ca-certificates/minerfleet
  cp /tmp/certs/*.crt /usr/local/share/ca-certificates/minerfleet/
  have_extra_certs=1
fi
rm -rf /tmp/certs

need="$*"
command -v "$PYTHON" >/dev/null 2>&1 || need="$need python3.11 python3.11-venv"
# Debian's python3.11 has venv/ensurepip only with python3.11-venv; python.org builds always have it.
if command -v dpkg-query >/dev/null 2>&1 && [ "$(command -v "$PYTHON" || true)" = /usr/bin/$PYTHON ] &&
  ! dpkg-query -W -f='${Status}' python3.11-venv 2>/dev/null | grep -q 'ok installed'; then
  need="$need python3.11-venv"
fi
ldconfig -p | grep -q 'libgomp\.so\.1' || need="$need libgomp1"
[ -s /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"
if [ -n "$(echo "$need" | tr -d ' ')" ]; then
  echo "setup-base: apt-get install$need" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086  # a list of package names
  apt-get install -y -q --no-install-recommends $need
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt/* /var/log/dpkg.log
fi
if [ -n "${have_extra_certs:-}" ]; then
  update-ca-certificates >/dev/null
fi

"$PYTHON" -m venv "$VENV"
# Python 3.11's venv comes with an old setuptools nothing here needs at run time; a dependency that
# does need one (torch in the hf image) then gets a current one instead of being shadowed by it.
"$VENV/bin/python" -m pip uninstall -q -y setuptools
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo "$APP" >"$site/minerfleet-app.pth"
mkdir -p "$APP"

if ! getent passwd "$UID_" >/dev/null; then
  groupadd --gid "$UID_" miner
  useradd --uid "$UID_" --gid "$UID_" --home-dir /home/miner --create-home --shell /bin/sh miner
fi
# HOME must be writable by whichever uid compose runs the container as (MINERFLEET_UID may be the
# operator's own uid, not 1000): bittensor and the HF/llama caches write under it. Sticky, like /tmp.
mkdir -p /home/miner
chmod 1777 /home/miner
