#!/usr/bin/env bash
# Build the Debian base image `local/debian:bookworm` without any container registry.
#
# The offline build path: when python:3.11-slim-bookworm / debian:bookworm-slim can't be
# pulled (no registry reachable, an air-gapped network), every Jarvis image can be built
# FROM this one instead (docker/build.sh does that by itself; by hand:
# JARVIS_PYTHON_IMAGE=local/debian:bookworm JARVIS_DEBIAN_IMAGE=local/debian:bookworm).
#
# How: debootstrap (minbase, ~1 min, ~120 MB) from the Debian mirror this machine's own apt
# uses, then `docker import`. Needs root (debootstrap) and a reachable Debian mirror.
#
# Cached twice: skipped when the image already exists in the engine; and the image is
# saved to $JARVIS_DOCKER_CACHE/images/ so a fresh engine on the same machine (CI) loads it
# in seconds instead of bootstrapping again.
#
#   docker/base-image.sh [--force]
# Environment: JARVIS_BASE_IMAGE (local/debian:bookworm), JARVIS_DEBIAN_MIRROR (from the
# host's apt sources, else http://deb.debian.org/debian), JARVIS_DOCKER_CACHE
# (~/.cache/jarvis/docker).
set -euo pipefail

IMAGE=${JARVIS_BASE_IMAGE:-local/debian:bookworm}
SUITE=bookworm
CACHE=${JARVIS_DOCKER_CACHE:-$HOME/.cache/jarvis/docker}
TARBALL="$CACHE/images/$(echo "$IMAGE" | tr '/:' '--').tar"
force=""
[ "${1:-}" = "--force" ] && force=1

log() { echo "base-image: $*" >&2; }

if [ -z "$force" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE exists; nothing to do"
  exit 0
fi
if [ -z "$force" ] && [ -s "$TARBALL" ]; then
  log "loading $IMAGE from $TARBALL"
  if docker load -i "$TARBALL" >/dev/null && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
  fi
  log "could not load $TARBALL; bootstrapping instead"
fi

# --- the mirror this machine's apt uses (deb822 .sources or one-line .list entries) ---
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      /^URIs:/ { uri = $2 } /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
      /^$/ { if (ok && uri) { print uri; exit } uri = ""; ok = 0 }
      END { if (ok && uri) print uri }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == suite) print $i; break } }' "$f"
  done
}
security_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    grep -E '^(URIs:|deb )' "$f" | grep -Eo '[a-z]+://[^ ]*debian-security[^ ]*' | head -n 1
  done
}
MIRROR=${JARVIS_DEBIAN_MIRROR:-$(host_mirror | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=$(security_mirror | head -n 1)

if ! command -v debootstrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  else
    log "debootstrap is missing (apt-get install debootstrap, as root)"; exit 1
  fi
fi
[ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }

mkdir -p "$CACHE/images"
work=$(mktemp -d "$CACHE/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
log "debootstrap --variant=minbase $SUITE from $MIRROR (about a minute)"
start=$(date +%s)
debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }

# apt sources: the same mirror (+ updates, + security where the host has a security mirror)
{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  [ -n "$SECURITY" ] && echo "deb $SECURITY $SUITE-security main"
} >"$rootfs/etc/apt/sources.list"
# like the official slim images: no docs, man pages or translations from later installs
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/90-no-recommends"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["bash"]' \
  --message "debootstrap --variant=minbase $SUITE $MIRROR" - "$IMAGE" >/dev/null
docker save -o "$TARBALL.tmp" "$IMAGE" && mv "$TARBALL.tmp" "$TARBALL"
log "built $IMAGE in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')); saved to $TARBALL"
