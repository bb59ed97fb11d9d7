#!/bin/sh
# Runs a command (the test suite) in a network namespace of its own whose only interface is
# loopback, where the system allows unprivileged namespaces: every server and Ray node the
# tests start is then reached on 127.0.0.1 alone, whatever address Ray would pick for itself.
# Elsewhere the command runs as it is.
if command -v unshare >/dev/null && command -v ip >/dev/null && unshare -rn true 2>/dev/null
then
    exec unshare -rn sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
exec "$@"
