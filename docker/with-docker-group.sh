#!/bin/sh
# Entry point for a service that talks to the Docker socket (the resource service).
#
# Started as root, it looks up the group owning the mounted socket (root, docker, or
# whatever gid the host uses), then drops to the unprivileged `jarvis` user with that one
# extra group and runs the command. So no gid has to be configured, and nothing runs as
# root past this point. Started as another user, it just runs the command.
#
#   jarvis-with-docker-group COMMAND [ARGS...]
set -eu
sock=${DOCKER_HOST:-unix:///var/run/docker.sock}
sock=${sock#unix://}
if [ "$(id -u)" != 0 ]; then
  exec "$@"
fi
groups=10001
if [ -S "$sock" ]; then
  groups="10001,$(stat -c %g "$sock")"
else
  echo "jarvis-with-docker-group: no Docker socket at $sock; running without it" >&2
fi
exec setpriv --reuid=10001 --regid=10001 --groups="$groups" --inh-caps=-all -- \
  env HOME=/home/jarvis USER=jarvis LOGNAME=jarvis "$@"
