#!/usr/bin/env bash
# The system packages the project needs (the PostgreSQL server and client programs come from the
# system, not from PyPI); `test` adds what the test suite uses, `demo` what the demo uses.
# Missing ones are installed with apt when run as root; otherwise this stops, naming the command.
# PG_LIB_DIR, PG_SHARE_DIR and LOCALE_DEFS_DIR are the system's directories (a test points them
# elsewhere to see what this does on a machine that lacks the packages).
set -euo pipefail
purpose=${1:-run}
lib=${PG_LIB_DIR:-/usr/lib/postgresql}
share=${PG_SHARE_DIR:-/usr/share/postgresql}
locales=${LOCALE_DEFS_DIR:-/usr/share/i18n/locales}

server_major() {
  # The newest installed server, else the one Debian's postgresql package would install.
  local installed
  installed=$(ls -d "$lib"/*/bin/initdb 2>/dev/null | sed -E "s|^$lib/([0-9]+)/.*|\1|" | sort -n | tail -1)
  if [ -n "$installed" ]; then echo "$installed"; return; fi
  apt-cache depends postgresql 2>/dev/null | grep -oE 'postgresql-[0-9]+$' | head -1 | cut -d- -f2 || true
}

missing=()
if ! ls "$lib"/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql postgresql-contrib)
fi
if ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)  # Debian's python3 makes no virtualenv without it
fi
if [ "$purpose" = test ] || [ "$purpose" = demo ]; then
  if [ "$(id -u)" -eq 0 ] && ! command -v runuser >/dev/null 2>&1; then
    missing+=(util-linux)  # root starts the test servers as the postgres user
  fi
fi
if [ "$purpose" = test ]; then
  major=$(server_major)
  major=${major:-15}
  [ -f "$share/$major/extension/pg_cron.control" ] || missing+=("postgresql-$major-cron")
  [ -f "$locales/de_DE" ] || missing+=(locales)
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the browser test drives it (Playwright, no download)
  command -v rclone >/dev/null 2>&1 || missing+=(rclone)  # the off-site archive test copies through it
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the missing system packages: ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  exit 0
fi
echo "missing system packages: ${missing[*]}" >&2
echo "install them, then run this again: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
exit 1
