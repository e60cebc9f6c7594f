#!/bin/sh
# Runs inside an image build: `pip install` into /opt/venv.
#
# Extra CA certificates (a network that re-signs TLS, a private index) come in as the
# BuildKit secret `ca`, mounted at /run/secrets/ca for this one RUN step only: they are
# appended to pip's own bundle in a temporary file that is removed before the step ends,
# so no certificate is ever written to an image layer. Without the secret pip uses its
# default bundle. Wheels are kept in the BuildKit cache mount at /root/.cache/pip between
# builds (never in a layer).
set -eu
PY=/opt/venv/bin/python
if [ -s /run/secrets/ca ]; then
  bundle=$(mktemp)
  trap 'rm -f "$bundle"' EXIT
  cat "$($PY -c 'import pip._vendor.certifi as c; print(c.where())')" /run/secrets/ca >"$bundle"
  export PIP_CERT="$bundle"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
export PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-120}"
$PY -m pip install --prefer-binary "$@"
