#!/bin/sh
# Debian packages the test suite uses as real peers. Installed only when
# running as root with apt-get available; otherwise the tests that need them
# skip with a reason (and fail under CI=true).
set -eu
packages="squid tinyproxy curl openssl nftables iproute2 chromium microsocks libnss3-tools nginx haproxy"
# sshd/ssh for tunnel's ProxyCommand test; ps for local-proxy's password check.
packages="$packages openssh-server openssh-client procps"
# A real Kerberos realm (MIT KDC, kadmin.local, kinit) for Negotiate, and what
# tunnelws[kerberos] (python-gssapi, python-krb5) compiles against.
packages="$packages krb5-kdc krb5-admin-server krb5-user libkrb5-dev gcc python3-dev"
missing=""
for pkg in $packages; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
# Node runs the Node `ws` adapter; any node >= 20 will do, however installed.
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not root or no apt-get; tests needing:$missing will skip" >&2
    exit 0
fi
echo "installing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
