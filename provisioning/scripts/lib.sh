# Shared helpers, prepended to every step script by the Hub before upload.
# On a real server HOST_ROOT is empty and files land in /; in the sandbox every
# host has its own root directory.
ROOT="${HOST_ROOT:-}"
# The time from bash's own printf: a step logs a dozen lines, each `date` a process.
log() { local now; TZ=UTC printf -v now '%(%H:%M:%S)T' -1; printf '[%s] %s\n' "$now" "$*"; }
# write_file PATH MODE: content from stdin; rewritten only when it changed, so a
# second run leaves the file (and its mtime) alone. Sets WROTE=1 when it wrote.
# Every command checks itself: errexit does not reach into a function whose
# caller tests it.
# shellcheck disable=SC2034 # read by the step scripts
WROTE=0
write_file() {
  local path="$ROOT$1" mode="$2" dir tmp
  WROTE=0
  dir="${path%/*}"
  mkdir -p "${dir:-/}" || exit 1
  tmp="$(mktemp "$path.XXXXXX")" || exit 1
  cat > "$tmp" || exit 1
  chmod "$mode" "$tmp" || exit 1
  if [[ -f "$path" ]] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 0
  fi
  mv -f "$tmp" "$path" || exit 1
  # shellcheck disable=SC2034 # read by the step scripts
  WROTE=1
  log "wrote $1"
}
require() { local name; for name in "$@"; do [[ -n "${!name:-}" ]] || { echo "missing $name" >&2; exit 2; }; done; }
