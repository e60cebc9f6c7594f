#!/bin/sh
# Runs inside the image build (stage llama-wheel): put a llama-cpp-python wheel in OUT.
#
#   llama-wheel.sh REQ_FILE WHEELHOUSE OUT
#
# REQ_FILE holds the pinned requirement (e.g. `llama-cpp-python[server]==0.3.36`). A wheel of
# that version in WHEELHOUSE (docker/build.sh copies the host's) is used as it is. Else pip
# builds one from source with compilers installed for this stage only; pip keeps the result
# in its wheel cache (a BuildKit cache mount), so that happens once per build machine.
set -eu
req=$(grep -v '^#' "$1" | head -n 1)
house=$2
out=$3
version=$(echo "$req" | sed -n 's/.*==\([^;, ]*\).*/\1/p')
name=$(echo "$req" | sed 's/[[<>=;, ].*//')
mkdir -p "$out"
for whl in "$house"/llama_cpp_python-"$version"-*.whl; do
  if [ -f "$whl" ]; then
    echo "llama-wheel: using $(basename "$whl") from docker/wheelhouse"
    cp "$whl" "$out"/
    exit 0
  fi
done
PY=/opt/venv/bin/python
# a wheel this machine compiled in an earlier build, in pip's cache (the BuildKit cache mount)
cached=$($PY -m pip cache list --format=abspath "llama_cpp_python-$version" 2>/dev/null | head -n 1 || true)
if [ -n "$cached" ] && [ -f "$cached" ]; then
  echo "llama-wheel: using $(basename "$cached") from pip's wheel cache"
  cp "$cached" "$out"/
  exit 0
fi
echo "llama-wheel: no prebuilt wheel for $name==$version; building from source (cached by pip afterwards)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends build-essential cmake >/dev/null
if [ -s /run/secrets/ca ]; then
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat "$($PY -c 'import pip._vendor.certifi as c; print(c.where())')" /run/secrets/ca >"$bundle"
  export PIP_CERT="$bundle"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
$PY -m pip wheel --no-deps --wheel-dir "$out" "$name==$version"
ls -l "$out"
