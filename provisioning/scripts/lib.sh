# Shared helpers, prepended to every step script by the Hub before upload.
# On a real server HOST_ROOT is empty and files land in /; in the sandbox every
# host has its own root directory.
ROOT="${HOST_ROOT:-}"
# The time from bash's own printf: a step logs a dozen lines, each `date` a process.
log() { local now; TZ=UTC printf -v now '%(%H:%M:%S)T' -1; printf '[%s] %s\n' "$now" "$*"; }
# write_file PATH MODE: content from stdin; rewritten only when it changed, so a
# second run leaves the file (and its mtime) alone. Sets WROTE=1 when it wrote.
# Bash reads and compares the text itself (no cat, mktemp or cmp): a setup writes
# a dozen files and every process counts on a small VPS. Text only: a NUL byte
# would end the content.
# Every command checks itself: errexit does not reach into a function whose
# caller tests it.
# shellcheck disable=SC2034 # read by the step scripts
WROTE=0
write_file() {
  local path="$ROOT$1" mode="$2" dir content="" current="" tmp
  WROTE=0
  IFS= read -r -d '' content || true
  if [[ -f "$path" ]]; then
    IFS= read -r -d '' current < "$path" || true
    [[ "$current" == "$content" ]] && return 0
  fi
  dir="${path%/*}"
  [[ -d "${dir:-/}" ]] || mkdir -p "${dir:-/}" || exit 1
  # Beside the target, so the rename is atomic; the pid keeps a stale run's apart.
  tmp="$path.hub-new.$$"
  printf '%s' "$content" > "$tmp" || exit 1
  chmod "$mode" "$tmp" || exit 1
  mv -f "$tmp" "$path" || exit 1
  # shellcheck disable=SC2034 # read by the step scripts
  WROTE=1
  log "wrote $1"
}
require() { local name; for name in "$@"; do [[ -n "${!name:-}" ]] || { echo "missing $name" >&2; exit 2; }; done; }
