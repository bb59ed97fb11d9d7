#!/bin/sh
# Runs a command (the test suite) in a network namespace of its own whose only interface is
# loopback, where the system allows it: every server and Ray node the tests start is then
# reached on 127.0.0.1 alone, whatever address Ray would pick for itself. Root keeps its own
# user there (the PostgreSQL the tests start runs as another user, which a user namespace
# that maps root alone cannot switch to); others get an unprivileged namespace, as root in
# it. Elsewhere the command runs as it is.
if command -v unshare >/dev/null && command -v ip >/dev/null; then
    for flags in -n -rn; do
        if unshare $flags true 2>/dev/null; then
            exec unshare $flags sh -c 'ip link set lo up && exec "$@"' sh "$@"
        fi
    done
fi
exec "$@"
