#!/usr/bin/env bash
# `make test`: the suite in three shards at once (TEST_SHARDS=2 for two), each on its
# own test database and Redis database, so the time the integration tests spend waiting
# on workers, sshd and emulators overlaps. Explicit arguments naming tests (a path or
# -k) run one plain pytest instead, as does TEST_SHARDS=1.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PYTEST=(.venv/bin/python -m pytest)
read -r -a args <<<"${PYTEST_ARGS:-}"

names_tests=0
prev=""
for arg in "${args[@]}"; do
  case "$prev" in
    --ignore | --ignore-glob | --deselect | -p | -m | -o | -c | --rootdir) prev=""; continue ;;
  esac
  [[ "$arg" == tests* || "$arg" == -k || "$arg" == *::* ]] && names_tests=1
  prev="$arg"
done
if [[ "${TEST_SHARDS:-2}" == 1 || $names_tests == 1 ]]; then
  exec "${PYTEST[@]}" "${args[@]}"
fi

# Shards: each a set of test folders, and a last one for the rest. The folders that wait
# on sandbox hosts and workers are spread so that each shard waits about as long; the
# rollouts, then the ops tests (the demo's story among them), moved to the second when
# the rest had become the longest (2026-12-07: 570, 421 and 662 s; then 564, 476 and
# 631 s). The suite is bound by the 2 cores, not by waiting: four, five or six shards
# took as long as three, 613-628 s against 614 s, with more CPU.
SHARDS=("tests/provisioning" "tests/sandbox tests/faults tests/agent tests/bench tests/rollouts tests/ops")
[[ "${TEST_SHARDS:-3}" == 2 ]] && SHARDS=("tests/provisioning tests/sandbox tests/faults")

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
start=$SECONDS
pids=()
names=()
ignores=()
# Redis DB 13 is the demo test's own (tests/ops/test_demo.py).
redis_dbs=(15 14 12 11)
run_shard() { # name, then the pytest arguments
  local name=$1
  shift
  TEST_DATABASE_NAME="test_hub_$name" TEST_REDIS_URL="redis://127.0.0.1:6379/${redis_dbs[${#pids[@]}]}" \
    "${PYTEST[@]}" "${args[@]}" "$@" >"$out/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}
shard=0
for paths in "${SHARDS[@]}"; do
  existing=()
  for path in $paths; do
    [[ -e "$path" ]] && existing+=("$path")
    ignores+=(--ignore "$path")
  done
  ((${#existing[@]})) && run_shard "$shard" "${existing[@]}"
  shard=$((shard + 1))
done
run_shard "$shard" "${ignores[@]}"
# Ctrl-C stops every shard (their workers are stopped by the fixtures).
trap 'kill -INT "${pids[@]}" 2>/dev/null; wait; rm -rf "$out"; exit 130' INT TERM

failed=0
codes=()
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  code=$?
  codes+=("shard ${names[$i]} exit $code")
  ((code == 0)) || failed=1
done
for i in "${!names[@]}"; do
  printf '\n===== shard %s =====\n' "${names[$i]}"
  cat "$out/${names[$i]}.log"
done
printf '\n%s; %s s in all\n' "$(IFS=,; echo "${codes[*]}")" "$((SECONDS - start))"
((failed == 0))
