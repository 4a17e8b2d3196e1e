#!/bin/sh
# As in the official image: when the container has IPv6, make the stock default.conf listen on [::]:80 too.
# A default.conf that is not the stock one (edited or mounted) is left alone.
set -e

conf=/etc/nginx/conf.d/default.conf
stock=/usr/share/kheops-test/nginx-default.conf

[ -f /proc/net/if_inet6 ] || { echo "$0: info: IPv6 not available"; exit 0; }
[ -f "$conf" ] || exit 0
if ! cmp -s "$conf" "$stock"; then
    echo "$0: info: $conf differs from the packaged version, leaving it alone"
    exit 0
fi
if [ ! -w "$conf" ]; then
    echo "$0: info: $conf is not writable"
    exit 0
fi
sed -i -E 's,listen       80;,listen       80;\n    listen  [::]:80;,' "$conf"
echo "$0: info: enabled listen on IPv6 in $conf"
