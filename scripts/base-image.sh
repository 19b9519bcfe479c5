#!/usr/bin/env bash
# Build the local base image minerfleet/base:bookworm without any registry:
# debootstrap a Debian bookworm minbase rootfs and `docker import` it.
# Idempotent: exits 0 when the image exists.  The rootfs tarball is cached in
# $MINERFLEET_CACHE (default ~/.cache/minerfleet) so that, after the engine lost its
# image store, a rerun only re-imports (seconds) instead of re-bootstrapping (~1 min).
# Needs root (debootstrap) only when the tarball is not cached yet.
set -euo pipefail

image=${MINERFLEET_BASE_IMAGE:-minerfleet/base:bookworm}
cache=${MINERFLEET_CACHE:-$HOME/.cache/minerfleet}
tarball=$cache/base-bookworm.tar
# What a Python runtime image needs; libgomp1/libstdc++6 are llama.cpp's runtime libs,
# netbase gives /etc/services+/etc/protocols, python3-venv brings ensurepip's pip wheel.
pkgs=ca-certificates,python3,python3-venv,libgomp1,libstdc++6,netbase,tzdata
fail() { echo "base-image: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || fail "no Docker engine answers: run scripts/docker-engine.sh first"
docker image inspect "$image" >/dev/null 2>&1 && exit 0

if [ ! -s "$tarball" ]; then
  [ "$(id -u)" = 0 ] || fail "debootstrap needs root: run sudo $0 once (the tarball is then cached in $cache)"
  command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install -y debootstrap (or run scripts/docker-engine.sh)"
  # Use the Debian mirror this machine's apt already uses (one-line and deb822 formats);
  # deb.debian.org otherwise.  MINERFLEET_DEBIAN_MIRROR overrides.
  uris=$( { grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{for(i=2;i<=NF;i++) if($i ~ /^https?:/){print $i; break}}'
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'; } || true)
  mirror=${MINERFLEET_DEBIAN_MIRROR:-$(grep -E '/debian/?$' <<<"$uris" | head -1 || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  security=$(grep -E '/debian-security/?$' <<<"$uris" | head -1 || true)
  security=${security:-http://deb.debian.org/debian-security}

  mkdir -p "$cache"
  root=$(mktemp -d "$cache/rootfs.XXXXXX") && chmod 755 "$root"   # becomes the image's /
  # --one-file-system: never descend into a /proc or /sys a failed debootstrap left mounted.
  trap 'rm -rf --one-file-system "$root" "$tarball.tmp"' EXIT
  echo "base-image: debootstrap bookworm from $mirror ..." >&2
  start=$SECONDS
  debootstrap --variant=minbase --include="$pkgs" bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    fail "debootstrap failed (see $cache/debootstrap.log; tail: $(tail -1 "$cache/debootstrap.log"))"

  # Image hygiene, as the official debian:*-slim images do: apt sources incl. updates and
  # security, no recommends, no apt cache/lists, no docs/man/locales (now and in later installs).
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
    "$mirror" "$mirror" "$security" >"$root/etc/apt/sources.list"
  echo 'APT::Install-Recommends "false"; APT::Install-Suggests "false";' >"$root/etc/apt/apt.conf.d/90minerfleet"
  echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' >"$root/etc/apt/apt.conf.d/docker-clean"
  printf 'path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\npath-exclude /usr/share/man/*\npath-exclude /usr/share/locale/*\n' \
    >"$root/etc/dpkg/dpkg.cfg.d/90minerfleet-nodoc"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,locale,info}/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/etc/hostname "$root"/etc/resolv.conf

  # Trust the CAs this machine added locally (e.g. a TLS-intercepting egress proxy's):
  # without them pip/apt-over-https inside builds and containers fail verification.
  # Debian's python3 and pip read the system bundle, so derived images need nothing more.
  # MINERFLEET_EXTRA_CA_DIR= (empty) skips this.
  cadir=${MINERFLEET_EXTRA_CA_DIR-/usr/local/share/ca-certificates}
  if [ -n "$cadir" ] && compgen -G "$cadir/*.crt" >/dev/null; then
    cp "$cadir"/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates in the rootfs failed"
  fi

  tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  echo "base-image: rootfs $(du -sh "$tarball" | cut -f1) in $((SECONDS - start)) s -> $tarball" >&2
fi

start=$SECONDS
# Metadata the import would otherwise lack (docker import starts with an empty config).
# The CA variables point libraries that bundle certifi (requests, httpx, old pip) at the
# system bundle, which holds the extra CAs added above.
ca=/etc/ssl/certs/ca-certificates.crt
docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1' \
  -c "ENV SSL_CERT_FILE=$ca REQUESTS_CA_BUNDLE=$ca PIP_CERT=$ca" \
  -c 'CMD ["/bin/bash"]' \
  -m "debootstrap bookworm minbase (scripts/base-image.sh)" \
  "$tarball" "$image" >/dev/null || fail "docker import of $tarball failed; delete it and rerun $0"
echo "base-image: imported $image in $((SECONDS - start)) s" >&2
