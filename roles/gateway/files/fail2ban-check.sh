#!/bin/sh
# Managed by localguard (role gateway). Check one fail2ban configuration file before it goes live:
# a copy of /etc/fail2ban with the candidate in its place, read as fail2ban would read it.
# Usage: localguard-fail2ban-check <path under /etc/fail2ban> <candidate file>
set -eu
target=$1
candidate=$2
copy=$(mktemp -d /tmp/localguard-fail2ban-check.XXXXXX)
trap 'rm -rf "$copy"' EXIT
cp -a /etc/fail2ban/. "$copy/"
cp "$candidate" "$copy/$target"
fail2ban-client -c "$copy" --test
