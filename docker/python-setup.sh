#!/bin/sh
# Runs inside an image build (as root): make sure a Python >= 3.11 with venv exists, create
# the virtual environment /opt/venv on it, add the system libraries the runtime needs, and
# the unprivileged user `jarvis`. Works on the official python:3.11-slim images (Python is
# there already), on a Debian base such as the debootstrap-built local/debian:bookworm
# (python3 3.11 from apt), and on Ubuntu-based CUDA images (python3.11 from apt).
#
#   python-setup.sh [extra apt packages...]
set -eu
export DEBIAN_FRONTEND=noninteractive

ok() { "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }

PY=""
for cand in /usr/local/bin/python3 python3.12 python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 && ok "$cand"; then PY=$(command -v "$cand"); break; fi
done

apt_pkgs="ca-certificates $*"
updated=""
if [ -z "$PY" ]; then
  apt-get update -qq && updated=1
  if apt-cache show python3 2>/dev/null | grep -Eq '^Version: 3\.(1[1-9])'; then
    apt_pkgs="$apt_pkgs python3 python3-venv"
    PY=/usr/bin/python3
  else  # e.g. Ubuntu 22.04: python3 is 3.10, python3.11 is packaged beside it
    apt_pkgs="$apt_pkgs python3.11 python3.11-venv"
    PY=/usr/bin/python3.11
  fi
fi
missing=""
for pkg in $apt_pkgs; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
apt_pkgs=$missing
if [ -n "$apt_pkgs" ]; then
  [ -n "$updated" ] || apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $apt_pkgs >/dev/null
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log
fi
ok "$PY" || { echo "python-setup.sh: no Python >= 3.11 with venv at $PY" >&2; exit 1; }

"$PY" -m venv /opt/venv
/opt/venv/bin/python -m pip --version >/dev/null

# the runtime user; named volumes mounted on these paths inherit their ownership
groupadd --system --gid 10001 jarvis 2>/dev/null || true
useradd --system --uid 10001 --gid 10001 --home-dir /home/jarvis --create-home --shell /usr/sbin/nologin jarvis 2>/dev/null || true
mkdir -p /app /data/sessions /data/resource /models /hf
chown -R jarvis:jarvis /data /models /hf
echo "python-setup.sh: $("$PY" --version) at $PY, venv /opt/venv"
