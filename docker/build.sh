#!/usr/bin/env bash
# Build the Jarvis images (`make images`).
#
#   docker/build.sh [--offline|--online] [TARGET...]
#
# TARGETs: redis core cpu gpu, or stub (= redis core), all (= redis core cpu gpu).
# Default: redis core cpu, plus gpu on a machine with an NVIDIA GPU (nvidia-smi works).
#
# Base images: the public python:3.11-slim-bookworm / debian:bookworm-slim when they are
# present or can be pulled; otherwise (or with --offline) local/debian:bookworm, built
# by docker/base-image.sh with debootstrap from the host's Debian mirror. Set
# JARVIS_PYTHON_IMAGE / JARVIS_DEBIAN_IMAGE / JARVIS_GPU_BASE_IMAGE to choose yourself.
#
# Extra CA certificates for pip inside the build (a network that re-signs TLS):
# JARVIS_BUILD_CA=/path/to/bundle.pem, else the host's PIP_CERT or pip's `global.cert`.
# They reach the pip steps as a BuildKit secret and are never stored in an image.
#
# llama-cpp-python (cpu image) compiles for ~8 min when no wheel exists; this script copies
# the wheel pip already built on this host (`make install`) into docker/wheelhouse/ when
# the host is Debian bookworm like the image, and pip's cache inside BuildKit keeps any
# wheel the build compiles, so either way it is compiled at most once per machine.
#
# Builds go through `docker compose build` (BuildKit, whatever the docker CLI version),
# else `docker buildx build`, else DOCKER_BUILDKIT=1 `docker build` (CLI 20.10-22.x).
# Tags: jarvis/{redis,core,cpu,gpu}:${JARVIS_TAG:-latest}.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "build.sh: $*" >&2; }
TAG=${JARVIS_TAG:-latest}
export JARVIS_TAG=$TAG
CACHE=${JARVIS_DOCKER_CACHE:-$HOME/.cache/jarvis/docker}
export JARVIS_DOCKER_CACHE=$CACHE
PUBLIC_PYTHON=python:3.11-slim-bookworm
PUBLIC_DEBIAN=debian:bookworm-slim

mode=auto
targets=()
for a in "$@"; do
  case $a in
    --offline) mode=offline ;;
    --online) mode=online ;;
    stub) targets+=(redis core) ;;
    all) targets+=(redis core cpu gpu) ;;
    redis | core | cpu | gpu) targets+=("$a") ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed 's/^# \{0,1\}//;$d'; exit 0 ;;
    *) log "unknown argument $a (try --help)"; exit 2 ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(redis core cpu)
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then targets+=(gpu); fi
fi
has() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

docker info >/dev/null 2>&1 || { log "no Docker engine reachable (DOCKER_HOST=${DOCKER_HOST:-default}); see .ci/docker.sh"; exit 1; }

# ---- base images ---------------------------------------------------------------------
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
can_pull() { have_image "$1" || timeout 120 docker pull -q "$1" >/dev/null 2>&1; }
if [ -z "${JARVIS_PYTHON_IMAGE:-}" ] || [ -z "${JARVIS_DEBIAN_IMAGE:-}" ]; then
  if [ "$mode" = auto ]; then
    if can_pull "$PUBLIC_PYTHON" && can_pull "$PUBLIC_DEBIAN"; then mode=online; else
      mode=offline
      log "public base images can't be pulled here; using the offline base (local/debian:bookworm)"
    fi
  fi
  if [ "$mode" = offline ]; then
    docker/base-image.sh
    export JARVIS_PYTHON_IMAGE=${JARVIS_PYTHON_IMAGE:-local/debian:bookworm}
    export JARVIS_DEBIAN_IMAGE=${JARVIS_DEBIAN_IMAGE:-local/debian:bookworm}
  else
    export JARVIS_PYTHON_IMAGE=${JARVIS_PYTHON_IMAGE:-$PUBLIC_PYTHON}
    export JARVIS_DEBIAN_IMAGE=${JARVIS_DEBIAN_IMAGE:-$PUBLIC_DEBIAN}
  fi
fi
if has gpu && [ "$mode" = offline ] && [ -z "${JARVIS_GPU_BASE_IMAGE:-}" ]; then
  # no CUDA base image offline: torch's nvidia-* wheels carry the CUDA libraries anyway,
  # and the NVIDIA container toolkit injects the driver at run time
  export JARVIS_GPU_BASE_IMAGE=local/debian:bookworm
fi

# ---- extra CA certificates for pip ---------------------------------------------------
ca=${JARVIS_BUILD_CA:-${PIP_CERT:-}}
if [ -z "$ca" ] && command -v python3 >/dev/null; then
  ca=$(python3 -m pip config get global.cert 2>/dev/null || true)
fi
if [ -n "$ca" ] && [ -s "$ca" ]; then
  export JARVIS_BUILD_CA=$ca
  log "pip in the build trusts the extra CA certificates in $ca (a build secret, not stored in the images)"
else
  export JARVIS_BUILD_CA=/dev/null
fi

# ---- llama-cpp-python wheel from the host (cpu image) ----------------------------------
if has cpu; then
  req=$(python3 docker/requirements.py pyproject.toml --extra cpu --only llama-cpp-python 2>/dev/null \
        || grep -o 'llama-cpp-python[^"]*' pyproject.toml | head -n 1)
  version=$(echo "$req" | sed -n 's/.*==\([^;, ]*\).*/\1/p')
  mkdir -p docker/wheelhouse
  if [ -n "$version" ] && ! ls docker/wheelhouse/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    if grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release && [ "$(uname -m)" = x86_64 ]; then
      dirs=("${JARVIS_WHEELHOUSE:-}" "$HOME/.cache/pip/wheels" "$(python3 -m pip cache dir 2>/dev/null || true)")
      for d in "${dirs[@]}"; do
        if [ -z "$d" ] || [ ! -d "$d" ]; then continue; fi
        whl=$(find "$d" -name "llama_cpp_python-$version-*linux_x86_64.whl" 2>/dev/null | head -n 1)
        if [ -n "$whl" ]; then
          cp "$whl" docker/wheelhouse/
          log "reusing the host's $(basename "$whl") (from $d)"
          break
        fi
      done
    fi
  fi
fi

# ---- build -----------------------------------------------------------------------------
declare -A service=([redis]=redis [core]=gateway [cpu]=stt [gpu]=gpu-image)
declare -A profile=([redis]="" [core]="" [cpu]=cpu [gpu]=gpu-image)
ordered=()
for t in redis core cpu gpu; do has "$t" && ordered+=("$t"); done
log "building ${ordered[*]} (tag $TAG; python base $JARVIS_PYTHON_IMAGE, debian base $JARVIS_DEBIAN_IMAGE)"
start=$(date +%s)

if docker compose version >/dev/null 2>&1; then
  args=() svcs=()
  for t in "${ordered[@]}"; do
    [ -n "${profile[$t]}" ] && args+=(--profile "${profile[$t]}")
    svcs+=("${service[$t]}")
  done
  docker compose "${args[@]}" build "${svcs[@]}"
else
  if docker buildx version >/dev/null 2>&1; then
    build=(docker buildx build --load)
  else
    export DOCKER_BUILDKIT=1
    build=(docker build)
  fi
  for t in "${ordered[@]}"; do
    "${build[@]}" -f docker/Dockerfile --target "$t" -t "jarvis/$t:$TAG" \
      --build-arg PYTHON_IMAGE="$JARVIS_PYTHON_IMAGE" --build-arg DEBIAN_IMAGE="$JARVIS_DEBIAN_IMAGE" \
      ${JARVIS_GPU_BASE_IMAGE:+--build-arg GPU_BASE_IMAGE="$JARVIS_GPU_BASE_IMAGE"} \
      --secret id=ca,src="$JARVIS_BUILD_CA" .
  done
fi
# images replaced by this build (the old tags' layers) would pile up in the engine
docker image prune -f --filter label=org.opencontainers.image.vendor=jarvis >/dev/null 2>&1 || true
for t in "${ordered[@]}"; do
  docker image inspect -f "jarvis/$t:$TAG {{.Size}}" "jarvis/$t:$TAG" | awk '{printf "  %-24s %5.0f MB\n", $1, $2/1e6}' >&2
done
log "done in $(( $(date +%s) - start ))s"
