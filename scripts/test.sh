#!/usr/bin/env bash
# `make test`: the suite in two shards at once, each on its own test database and Redis
# database, so the time the integration tests spend waiting on workers, sshd and
# emulators overlaps. Explicit arguments naming tests (a path or -k) run one plain
# pytest instead, as does TEST_SHARDS=1.
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

# What waits on sandbox hosts goes in one shard, the rest in the other.
SANDBOX_HEAVY=(tests/provisioning tests/sandbox tests/faults)
ignores=()
for path in "${SANDBOX_HEAVY[@]}"; do ignores+=(--ignore "$path"); done
existing=()
for path in "${SANDBOX_HEAVY[@]}"; do [[ -e "$path" ]] && existing+=("$path"); done

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
start=$SECONDS
TEST_DATABASE_NAME=test_hub_a TEST_REDIS_URL=redis://127.0.0.1:6379/15 \
  "${PYTEST[@]}" "${args[@]}" "${existing[@]}" >"$out/a.log" 2>&1 &
shard_a=$!
TEST_DATABASE_NAME=test_hub_b TEST_REDIS_URL=redis://127.0.0.1:6379/14 \
  "${PYTEST[@]}" "${args[@]}" "${ignores[@]}" >"$out/b.log" 2>&1 &
shard_b=$!
# Ctrl-C stops both shards (their workers are stopped by the fixtures).
trap 'kill -INT $shard_a $shard_b 2>/dev/null; wait; rm -rf "$out"; exit 130' INT TERM

wait $shard_a; rc_a=$?
wait $shard_b; rc_b=$?
printf '\n===== shard A: %s =====\n' "${existing[*]}"; cat "$out/a.log"
printf '\n===== shard B: the rest =====\n'; cat "$out/b.log"
printf '\nshard A exit %s, shard B exit %s, %s s in all\n' "$rc_a" "$rc_b" "$((SECONDS - start))"
(( rc_a == 0 && rc_b == 0 ))
