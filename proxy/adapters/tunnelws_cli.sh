#!/bin/sh
# Harness adapter: the tunnelws command-line client, with its defaults.
#
# `tunnelws connect URL` sends each stdin line as a message and prints each
# message received; it reads the proxy variables, no_proxy and SSL_CERT_FILE
# itself. The message is TUNNELWS_MESSAGE repeated TUNNELWS_MESSAGE_REPEAT
# times, written as one line; TUNNELWS_CONNECT_TIMEOUT becomes
# --connect-timeout. With TUNNELWS_IDLE=S the second copy of the message is
# written S seconds after the first. Everything else is tunnelws's defaults
# (keepalive pings every 20 s included): the harness measures defaults.
# Exit status: tunnelws's own (0 ok, 3..12 by failure category), 124 when the
# 20 s deadline passes.
set -u
: "${TUNNELWS_URL:?TUNNELWS_URL is not set}"
message=${TUNNELWS_MESSAGE:-hello}
repeat=${TUNNELWS_MESSAGE_REPEAT:-1}
idle=${TUNNELWS_IDLE:-0}
tunnelws=${TUNNELWS_BIN:-tunnelws}

case $repeat in
    '' | *[!0-9]* | 0) echo "tunnelws: TUNNELWS_MESSAGE_REPEAT must be a whole number >= 1" >&2; exit 2 ;;
esac

line() {
    i=0
    while [ "$i" -lt "$repeat" ]; do
        printf '%s' "$message"
        i=$((i + 1))
    done
    printf '\n'
}

# Writes the message, and again after the idle wait. Stopped with TERM when
# tunnelws exits first, so a lost connection ends the adapter at once.
feed() {
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    line
    if [ "$idle" != 0 ]; then
        sleep "$idle" &
        sleeper=$!
        wait "$sleeper"
        line
    fi
}

# Not `feed | tunnelws`: a pipeline lasts until its slowest member, so the
# idle wait would outlive a tunnelws that already reported the lost tunnel.
workdir=$(mktemp -d) || exit 1
mkfifo "$workdir/stdin" || exit 1
sleeper=
feed >"$workdir/stdin" &
feeder=$!
# The deadline grows with the idle wait; `timeout` never lets it hang.
deadline=$(awk -v idle="$idle" 'BEGIN { print 20 + idle }')
timeout "$deadline" "$tunnelws" connect \
    --connect-timeout "${TUNNELWS_CONNECT_TIMEOUT:-10}" "$TUNNELWS_URL" <"$workdir/stdin"
status=$?
kill "$feeder" 2>/dev/null
wait "$feeder" 2>/dev/null
rm -rf "$workdir"
exit "$status"
