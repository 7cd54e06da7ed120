#!/bin/sh
# Harness adapter: the tunnelws command-line client, with its defaults.
#
# `tunnelws connect URL` sends each stdin line as a message and prints each
# message received; it reads the proxy variables, no_proxy and SSL_CERT_FILE
# itself. With TUNNELWS_IDLE=S the second copy of the message is written S
# seconds after the first. Keepalive pings are off by default (the harness
# measures defaults; add --ping-interval for proxies that drop idle tunnels).
# Exit status: tunnelws's own (0 ok, 3..12 by failure category), 124 when the
# 20 s deadline passes.
set -u
: "${TUNNELWS_URL:?TUNNELWS_URL is not set}"
message=${TUNNELWS_MESSAGE:-hello}
idle=${TUNNELWS_IDLE:-0}
tunnelws=${TUNNELWS_BIN:-tunnelws}

feed() {
    printf '%s\n' "$message"
    if [ "$idle" != 0 ]; then
        sleep "$idle"
        printf '%s\n' "$message"
    fi
}

# The deadline grows with the idle wait; `timeout` never lets it hang.
deadline=$(awk -v idle="$idle" 'BEGIN { print 20 + idle }')
feed | timeout "$deadline" "$tunnelws" connect "$TUNNELWS_URL"
