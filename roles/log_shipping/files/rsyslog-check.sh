#!/bin/sh
# Managed by localguard: check one rsyslog drop-in before it goes live, with the global settings
# of Debian's main configuration it is loaded under (queues and imfile need the work directory).
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf 'global(workDirectory="/var/spool/rsyslog")\ninclude(file="%s")\n' "$1" > "$dir/rsyslog.conf"
rsyslogd -N1 -f "$dir/rsyslog.conf"
