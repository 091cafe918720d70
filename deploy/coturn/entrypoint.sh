#!/bin/sh
# Start coturn with deploy/coturn/turnserver.conf plus what comes from the environment:
#   TURN_SECRET            the static-auth-secret, same value as the portal's (required)
#   TURN_REALM             realm (default: browserphone)
#   TURN_LISTEN_IP         listening address (default: every address)
#   TURN_EXTERNAL_IP       public address behind 1:1 NAT ("public" or "public/private")
#   TURN_PORT              listening port (default 3478, UDP and TCP)
#   TURN_MIN_PORT/MAX_PORT relay port range (default 49160-49400)
#   TURN_ALLOWED_PEER_IPS  comma-separated addresses/ranges the relay may reach although they
#                          are private: the sipworkers' media addresses (MEDIA_ADDRESS, ICE host)
#   TURN_CONF              the base configuration (default: turnserver.conf next to this script)
# The secret goes into a file readable by the server only, not onto its command line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${TURN_SECRET:?set TURN_SECRET (the same value as the portal's)}"
conf=$(mktemp /tmp/turnserver.XXXXXX.conf)
chmod 600 "$conf"
{
    cat "${TURN_CONF:-$here/turnserver.conf}"
    echo "static-auth-secret=$TURN_SECRET"
    echo "realm=${TURN_REALM:-browserphone}"
    echo "listening-port=${TURN_PORT:-3478}"
    echo "min-port=${TURN_MIN_PORT:-49160}"
    echo "max-port=${TURN_MAX_PORT:-49400}"
    [ -n "${TURN_LISTEN_IP:-}" ] && echo "listening-ip=$TURN_LISTEN_IP"
    [ -n "${TURN_EXTERNAL_IP:-}" ] && echo "external-ip=$TURN_EXTERNAL_IP"
    for peer in $(echo "${TURN_ALLOWED_PEER_IPS:-}" | tr ',' ' '); do
        echo "allowed-peer-ip=$peer"
    done
} > "$conf"
exec turnserver -c "$conf" "$@"
