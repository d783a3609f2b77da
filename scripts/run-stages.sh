#!/usr/bin/env bash
# Run `make` targets side by side, each into its own log, then print each log whole and, for a
# failed target, its last lines again at the very end: a CI log is often read only from its tail.
# Usage: scripts/run-stages.sh <log-dir> <target> [<target> ...]
set -uo pipefail
logs=$1
shift
mkdir -p "$logs"
declare -A pids
for target in "$@"; do
  make --no-print-directory "$target" >"$logs/$target.log" 2>&1 &
  pids[$target]=$!
done
declare -A status
for target in "$@"; do
  wait "${pids[$target]}"
  status[$target]=$?
done
failed=0
for target in "$@"; do
  printf '\n===== stage %s: exit %s =====\n' "$target" "${status[$target]}"
  cat "$logs/$target.log"
done
for target in "$@"; do
  if [ "${status[$target]}" -ne 0 ]; then
    failed=1
    printf '\n===== stage %s FAILED (exit %s); its last 60 lines =====\n' "$target" "${status[$target]}"
    tail -n 60 "$logs/$target.log"
  fi
done
exit "$failed"
