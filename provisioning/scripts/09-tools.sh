# Step 9: one Compose project per tool the customer chose, each behind its subdomain.
# The Hub generates and checks every file (provisioning/services/stacks.py) and sends
# them as HUB_STACK_<tool>: three base64 words, the compose file, the nginx vhost ("-"
# for none) and the lines of the stack's .env ("NAME KIND ARG"). The .env holds the
# stack's database credentials and secrets: made here once, mode 0600, never logged,
# never sent by the Hub; a value already there is kept.
set -euo pipefail
require HUB_DOMAIN
mkdir -p "$ROOT/etc/nginx/sites-available" "$ROOT/etc/nginx/sites-enabled" "$ROOT/etc/nginx/conf.d"

# secret KIND ARG: a value for one .env line.
secret() {
  case "$1" in
    hex) openssl rand -hex "$2" ;;
    laravel) printf 'base64:%s' "$(openssl rand -base64 "$2")" ;;
    value) printf '%s' "$2" ;;
    *) echo "unknown .env kind $1" >&2; exit 2 ;;
  esac
}
# decode WORD: the text of one base64 word ("-" is none).
decode() { [[ "$1" == - ]] || base64 -d <<<"$1"; }
# ensure_env PATH SPEC: a line NAME=value in PATH for every NAME of SPEC missing there.
ensure_env() {
  local path="$ROOT$1" name kind arg value current="" added=0
  (umask 077; : >> "$path") || exit 1
  chmod 0600 "$path" || exit 1
  IFS= read -r -d '' current < "$path" || true
  while read -r name kind arg; do
    [[ -n "$name" ]] || continue
    [[ $'\n'"$current" == *$'\n'"$name="* ]] && continue
    value="$(secret "$kind" "$arg")" || exit 1
    printf '%s=%s\n' "$name" "$value" >> "$path" || exit 1
    added=$((added + 1))
  done <<<"$2"
  log "$1: $added new value(s)"
}

# The map the vhosts' websocket headers use, once: nginx refuses a second map of a name.
write_file /etc/nginx/conf.d/hub-upgrade.conf 0644 <<'CONF'
map $http_upgrade $connection_upgrade {
    default upgrade;
    '' close;
}
CONF

count=0
for tool in ${HUB_TOOL_NAMES:-}; do
  var="HUB_STACK_$tool"
  [[ -n "${!var:-}" ]] || { echo "missing $var" >&2; exit 2; }
  read -r compose vhost envspec <<<"${!var}"
  dir="/opt/hub/tools/$tool"
  mkdir -p "$ROOT$dir"
  text="$(decode "$envspec")"
  ensure_env "$dir/.env" "$text"
  text="$(decode "$compose")"
  write_file "$dir/compose.yml" 0644 <<<"$text"
  docker compose -f "$ROOT$dir/compose.yml" up -d
  if [[ "$vhost" != - ]]; then
    text="$(decode "$vhost")"
    write_file "/etc/nginx/sites-available/$tool.$HUB_DOMAIN.conf" 0644 <<<"$text"
    ln -sfn "../sites-available/$tool.$HUB_DOMAIN.conf" "$ROOT/etc/nginx/sites-enabled/$tool.$HUB_DOMAIN.conf"
  fi
  count=$((count + 1))
done
systemctl reload nginx
log "$count tool stacks up"
