#!/usr/bin/env bash
# Install the Debian packages the test suite uses, when they are missing and we can.
set -euo pipefail
need=()
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${need[*]} ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || echo "warning: could not install some of: ${need[*]} (tests that need them will skip)"
else
  echo "note: missing ${need[*]}; install them (e.g. sudo apt-get install ${need[*]}) or the tests that need them skip"
fi
