#!/bin/sh
# Start the BrowserPhone development PBX (Kamailio registrar/proxy) in the foreground.
# Ctrl-C stops it. Demo users: deploy/kamailio/users.demo (1001/1002/1003 tenant A, 2001 tenant B).
# Demo lines: deploy/kamailio/lines.demo (0311112222, 0311113333 of 1001+1002; 0322224444 of 2001).
#
# Environment (all optional):
#   SIP_IP=127.0.0.1  SIP_PORT=5060   where to listen (UDP and TCP)
#   SIP_DOMAIN=pbx.test               an extra domain name served as local
#   USERS_FILE=path                   users file (Kamailio syntax, see users.demo)
#   LINES_FILE=path                   lines file (Kamailio syntax, see lines.demo)
#   RUNDIR=dir                        pid file, control socket (kamcmd -s unix:$RUNDIR/ctl ...)
#   LOG_LEVEL=2                       3 logs every request
#   TLS_CERT=path TLS_KEY=path        also SIP over TLS (kamailio-tls.cfg; Debian package
#   TLS_PORT=5061                       kamailio-tls-modules) with this certificate chain + key
set -eu

here=$(cd "$(dirname "$0")" && pwd)
SIP_IP=${SIP_IP:-127.0.0.1}
SIP_PORT=${SIP_PORT:-5060}
USERS_FILE=${USERS_FILE:-$here/users.demo}
LINES_FILE=${LINES_FILE:-$here/lines.demo}
RUNDIR=${RUNDIR:-${TMPDIR:-/tmp}/browserphone-kamailio}
LOG_LEVEL=${LOG_LEVEL:-2}
TLS_CERT=${TLS_CERT:-}
TLS_KEY=${TLS_KEY:-}
TLS_PORT=${TLS_PORT:-5061}
CFG=$here/kamailio.cfg

KAMAILIO=$(command -v kamailio || echo /usr/sbin/kamailio)
if [ ! -x "$KAMAILIO" ]; then
    echo "kamailio not found: apt-get install -y --no-install-recommends kamailio" >&2
    exit 1
fi
case "$USERS_FILE" in
    /*) ;;
    *) USERS_FILE=$(pwd)/$USERS_FILE ;;
esac
case "$LINES_FILE" in
    /*) ;;
    *) LINES_FILE=$(pwd)/$LINES_FILE ;;
esac
if [ "${#USERS_FILE}" -ge 127 ] || [ "${#LINES_FILE}" -ge 127 ]; then
    echo "USERS_FILE and LINES_FILE paths must be shorter than 127 bytes (Kamailio include_file limit)" >&2
    exit 1
fi
mkdir -p "$RUNDIR"

set -- -A "SIP_IP=$SIP_IP" -A "SIP_PORT=$SIP_PORT" -A "LOG_LEVEL=$LOG_LEVEL" \
    -A "CTL_SOCK=\"unix:$RUNDIR/ctl\"" --substdef "!USERS_FILE!$USERS_FILE!g" \
    --substdef "!LINES_FILE!$LINES_FILE!g"
if [ -n "${SIP_DOMAIN:-}" ]; then
    set -- "$@" -A "SIP_DOMAIN=$SIP_DOMAIN"
fi
if [ -n "$TLS_CERT" ]; then
    # The same PBX plus a TLS listener (kamailio-tls.cfg includes kamailio.cfg).
    CFG=$here/kamailio-tls.cfg
    set -- "$@" -A "TLS_PORT=$TLS_PORT" -A "TLS_CERT=\"$TLS_CERT\"" -A "TLS_KEY=\"${TLS_KEY:-$TLS_CERT}\""
fi
if [ "$SIP_PORT" != 5060 ]; then
    # UAs told "domain $SIP_IP" send sip:$SIP_IP, i.e. port 5060: treat that as local too.
    set -- "$@" -A "SIP_ALIAS=$SIP_IP:5060"
fi

echo "BrowserPhone dev PBX on $SIP_IP:$SIP_PORT (udp+tcp), users from $USERS_FILE, lines from $LINES_FILE"
[ -n "$TLS_CERT" ] && echo "  TLS on $SIP_IP:$TLS_PORT with $TLS_CERT"
echo "  registrations: kamcmd -s unix:$RUNDIR/ctl ul.dump"
exec "$KAMAILIO" -f "$CFG" -DD -E -Y "$RUNDIR" -P "$RUNDIR/kamailio.pid" \
    -m 64 -M 8 "$@"
