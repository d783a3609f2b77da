#!/usr/bin/env bash
# Run `make` targets side by side, each into its own log, then print each log whole and, for a
# failed target, its last lines again at the very end: a CI log is often read only from its tail.
# Every 5 minutes a line says where each stage is. With LOCALGUARD_DEADLINE (epoch seconds, set by
# .ci/run) a stage still running 2 minutes before it is stopped, so its log and the summary are
# printed before CI's own limit cuts everything off.
# Usage: scripts/run-stages.sh <log-dir> <target> [<target> ...]
set -uo pipefail
logs=$1
shift
mkdir -p "$logs"
start=$(date +%s)
budget=()
if [ -n "${LOCALGUARD_DEADLINE:-}" ]; then
  left=$((LOCALGUARD_DEADLINE - 120 - start))
  budget=(timeout -k 20 "$((left > 60 ? left : 60))")
  printf 'stages: %s s left before the CI deadline\n' "$left"
fi
declare -A pids
for target in "$@"; do
  "${budget[@]}" make --no-print-directory "$target" >"$logs/$target.log" 2>&1 &
  pids[$target]=$!
done
(
  while sleep 300; do
    for target in "$@"; do
      printf '[%4d s] %s: %s\n' "$(($(date +%s) - start))" "$target" "$(tail -n 1 "$logs/$target.log" | cut -c1-150)"
    done
  done
) &
heartbeat=$!
declare -A status
for target in "$@"; do
  wait "${pids[$target]}"
  status[$target]=$?
done
pkill -P "$heartbeat"; kill "$heartbeat" 2>/dev/null
failed=0
for target in "$@"; do
  note=""
  [ "${status[$target]}" -eq 124 ] && note=" (stopped at the CI deadline)"
  printf '\n===== stage %s: exit %s%s =====\n' "$target" "${status[$target]}" "$note"
  cat "$logs/$target.log"
done
for target in "$@"; do
  if [ "${status[$target]}" -ne 0 ]; then
    failed=1
    printf '\n===== stage %s FAILED (exit %s); its last 60 lines =====\n' "$target" "${status[$target]}"
    tail -n 60 "$logs/$target.log"
  fi
done
printf 'stages took %s s\n' "$(($(date +%s) - start))"
exit "$failed"
