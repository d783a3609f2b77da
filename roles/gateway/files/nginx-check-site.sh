#!/bin/sh
# Managed by localguard (role gateway). Check one http-level nginx site file on its own, before
# it goes live: a throwaway main configuration loads the modules and includes only that file.
set -eu
site=$1
main=$(mktemp /tmp/localguard-nginx-check.XXXXXX)
trap 'rm -f "$main"' EXIT
cat >"$main" <<CONF
include /etc/nginx/modules-enabled/*.conf;
pid /tmp/localguard-nginx-check.pid;
events {}
http {
    include /etc/nginx/mime.types;
    include $site;
}
CONF
exec nginx -t -q -c "$main"
