#!/usr/bin/env bash
# Install or upgrade wehub_backup on the VPS. Run as root from the repository, ideally cloned
# to /opt/wehub_backup:   sudo /opt/wehub_backup/deploy/install.sh
#
# It creates the service user, the backup directory and the two log files, Dagster's storage
# database on the local PostgreSQL, the virtualenv, the `wehub-backup` command and the systemd
# units. Running it again is safe: an existing environment file or password file is never
# overwritten, and no database is ever dropped. It starts nothing: see the steps it prints.
#
# Overridable from the environment: SERVICE_USER, PYTHON, INSTALL_VENV=no (keep the venv as
# is), PG_ADMIN_OS_USER and PG_ADMIN_HOST (how to reach the local PostgreSQL as its
# superuser; default: the `postgres` OS user over the default socket), and DESTDIR (install
# files below another root directory; users and databases are still created on this machine).
set -euo pipefail

APP_DIR=$(cd "$(dirname "$0")/.." && pwd)
DEPLOY_DIR=$APP_DIR/deploy
DESTDIR=${DESTDIR:-}
SERVICE_USER=${SERVICE_USER:-wehub}
PYTHON=${PYTHON:-python3}
INSTALL_VENV=${INSTALL_VENV:-yes}
PG_ADMIN_OS_USER=${PG_ADMIN_OS_USER:-postgres}
PG_ADMIN_HOST=${PG_ADMIN_HOST:-}
STATE_DIR=/var/lib/wehub_backup
CONFIG_DIR=/etc/wehub_backup
ENV_FILE=$CONFIG_DIR/wehub_backup.env
UNIT_DIR=/etc/systemd/system
BIN_DIR=/usr/local/bin
UNITS=(wehub-dagster-webserver.service wehub-dagster-daemon.service)

say() { printf '%s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"
}

ensure_service_user() {
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "user $SERVICE_USER: exists"
  else
    useradd --system --user-group --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
    say "user $SERVICE_USER: created"
  fi
}

# The environment file is the operator's: installed once from the example, never replaced.
install_environment_file() {
  install -d -m 0755 "$DESTDIR$CONFIG_DIR"
  if [ -e "$DESTDIR$ENV_FILE" ]; then
    say "$ENV_FILE: kept"
  else
    install -o root -g "$SERVICE_USER" -m 0640 "$DEPLOY_DIR/wehub_backup.env.example" "$DESTDIR$ENV_FILE"
    say "$ENV_FILE: installed from the example; edit it"
  fi
}

# Paths and names below come from the environment file, so a changed WEHUB_BACKUP_DIR or
# DAGSTER_PG_DB is honoured on the next run of this script.
read_environment_file() {
  set -a
  # shellcheck disable=SC1090
  . "$DESTDIR$ENV_FILE"
  set +a
  : "${DAGSTER_HOME:=$STATE_DIR/dagster_home}" "${PGPASSFILE:=$STATE_DIR/.pgpass}"
  : "${WEHUB_BACKUP_DIR:=/opt/supabase_backups}"
  : "${WEHUB_ARCHIVE_DIR:=$(dirname "$WEHUB_BACKUP_DIR")/supabase_archives}"
  : "${WEHUB_BACKUP_LOG:=/var/log/supabase_backup.log}" "${WEHUB_MIGRATION_LOG:=/var/log/supabase_migration.log}"
}

create_directories() {
  install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$DESTDIR$STATE_DIR" "$DESTDIR$DAGSTER_HOME"
  install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0700 "$DESTDIR$WEHUB_BACKUP_DIR" "$DESTDIR$WEHUB_ARCHIVE_DIR"
  say "directories: $STATE_DIR, $DAGSTER_HOME, $WEHUB_BACKUP_DIR, $WEHUB_ARCHIVE_DIR (owner $SERVICE_USER)"
}

create_log_files() {
  local log
  for log in "$WEHUB_BACKUP_LOG" "$WEHUB_MIGRATION_LOG"; do
    install -d -m 0755 "$DESTDIR$(dirname "$log")"
    if [ -e "$DESTDIR$log" ]; then
      chown "$SERVICE_USER:$SERVICE_USER" "$DESTDIR$log"
    else
      install -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0640 /dev/null "$DESTDIR$log"
    fi
  done
  say "log files: $WEHUB_BACKUP_LOG, $WEHUB_MIGRATION_LOG (owner $SERVICE_USER)"
}

# The password file is the operator's too: installed once, mode 0600, never replaced.
install_password_file() {
  local path=$DESTDIR$PGPASSFILE
  if [ -e "$path" ]; then
    say "$PGPASSFILE: kept"
    if [ -n "$(find "$path" -perm /077)" ]; then
      say "  warning: $PGPASSFILE is readable by group or others; run: chmod 600 $PGPASSFILE"
    fi
  else
    [ -d "$(dirname "$path")" ] || install -d -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0750 "$(dirname "$path")"
    install -o "$SERVICE_USER" -g "$SERVICE_USER" -m 0600 "$DEPLOY_DIR/pgpass.example" "$path"
    say "$PGPASSFILE: installed from the example; replace its CHANGE_ME passwords"
  fi
}

install_dagster_yaml() {
  install -o root -g "$SERVICE_USER" -m 0640 "$DEPLOY_DIR/dagster.yaml" "$DESTDIR$DAGSTER_HOME/dagster.yaml"
  say "$DAGSTER_HOME/dagster.yaml: PostgreSQL storage from DAGSTER_PG_*"
}

admin_psql() {
  (cd / && runuser -u "$PG_ADMIN_OS_USER" -- psql -X -q -t -A -v ON_ERROR_STOP=1 \
    ${PG_ADMIN_HOST:+-h "$PG_ADMIN_HOST"} -p "${DAGSTER_PG_PORT:-5432}" -d postgres "$@")
}

is_identifier() {
  [[ $1 =~ ^[a-z_][a-z0-9_]*$ ]]
}

# Dagster's storage: a login role that owns one database, on the VPS's own PostgreSQL. A new
# role gets a generated password, written only to the password file (never to an argument list).
create_dagster_database() {
  if [ -z "${DAGSTER_PG_HOST:-}" ]; then
    say "storage database: DAGSTER_PG_HOST is not set; Dagster would keep its storage in SQLite"
    return
  fi
  case $DAGSTER_PG_HOST in
    localhost|127.0.0.1|::1|/*) ;;
    *) say "storage database: $DAGSTER_PG_HOST is not this machine; create role and database there"; return ;;
  esac
  is_identifier "$DAGSTER_PG_USER" || die "DAGSTER_PG_USER must be a lower-case identifier"
  is_identifier "$DAGSTER_PG_DB" || die "DAGSTER_PG_DB must be a lower-case identifier"
  if [ -n "$(admin_psql -c "SELECT 1 FROM pg_roles WHERE rolname = '$DAGSTER_PG_USER'")" ]; then
    say "role $DAGSTER_PG_USER: exists (its password must be in $PGPASSFILE)"
  else
    local password
    password=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    admin_psql <<<"CREATE ROLE $DAGSTER_PG_USER LOGIN PASSWORD '$password'"
    printf '%s:%s:%s:%s:%s\n' "$DAGSTER_PG_HOST" "${DAGSTER_PG_PORT:-5432}" "$DAGSTER_PG_DB" \
      "$DAGSTER_PG_USER" "$password" >>"$DESTDIR$PGPASSFILE"
    say "role $DAGSTER_PG_USER: created; its password was added to $PGPASSFILE"
  fi
  if [ -n "$(admin_psql -c "SELECT 1 FROM pg_database WHERE datname = '$DAGSTER_PG_DB'")" ]; then
    say "database $DAGSTER_PG_DB: exists"
  else
    admin_psql -c "CREATE DATABASE $DAGSTER_PG_DB OWNER $DAGSTER_PG_USER"
    say "database $DAGSTER_PG_DB: created (owner $DAGSTER_PG_USER)"
  fi
}

install_virtualenv() {
  if [ "$INSTALL_VENV" != yes ]; then
    say "virtualenv: left as it is (INSTALL_VENV=$INSTALL_VENV)"
    return
  fi
  [ -x "$APP_DIR/.venv/bin/python" ] || "$PYTHON" -m venv "$APP_DIR/.venv"
  "$APP_DIR/.venv/bin/pip" install --quiet --upgrade pip
  "$APP_DIR/.venv/bin/pip" install --quiet --upgrade "$APP_DIR"
  say "virtualenv: $APP_DIR/.venv"
}

# The units and the wrapper name /opt/wehub_backup and the user wehub; point them at this
# checkout and the chosen user.
install_units_and_command() {
  local unit
  install -d -m 0755 "$DESTDIR$UNIT_DIR" "$DESTDIR$BIN_DIR"
  for unit in "${UNITS[@]}"; do
    sed -e "s#/opt/wehub_backup#$APP_DIR#g" -e "s#^User=wehub\$#User=$SERVICE_USER#" \
      -e "s#^Group=wehub\$#Group=$SERVICE_USER#" "$DEPLOY_DIR/$unit" >"$DESTDIR$UNIT_DIR/$unit"
    chmod 0644 "$DESTDIR$UNIT_DIR/$unit"
  done
  sed -e "s#^APP_DIR=.*#APP_DIR=$APP_DIR#" -e "s#^SERVICE_USER=.*#SERVICE_USER=$SERVICE_USER#" \
    "$DEPLOY_DIR/wehub-backup" >"$DESTDIR$BIN_DIR/wehub-backup"
  chmod 0755 "$DESTDIR$BIN_DIR/wehub-backup"
  if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
  fi
  say "units: ${UNITS[*]} in $UNIT_DIR; command: $BIN_DIR/wehub-backup"
}

# Dagster's storage schema is created here, once, and upgraded after a Dagster upgrade: the two
# services would otherwise race to create it on their first start, and one of them would fail.
migrate_dagster_storage() {
  local dagster=$APP_DIR/.venv/bin/dagster output
  if [ -z "${DAGSTER_PG_HOST:-}" ] || [ ! -x "$dagster" ]; then
    say "storage schema: not migrated (no PostgreSQL storage or no virtualenv)"
    return
  fi
  if output=$(cd "$APP_DIR" && runuser -u "$SERVICE_USER" -- env DAGSTER_HOME="$DESTDIR$DAGSTER_HOME" \
      PGPASSFILE="$DESTDIR$PGPASSFILE" "$dagster" instance migrate 2>&1); then
    say "storage schema: up to date (dagster instance migrate)"
  else
    say "storage schema: not migrated: $(printf '%s\n' "$output" | grep -v '^\s*$' | tail -n 1)"
    say "  run as $SERVICE_USER before starting the services: $dagster instance migrate"
  fi
}

check_code_is_readable() {
  if ! runuser -u "$SERVICE_USER" -- test -r "$APP_DIR/workspace.yaml"; then
    say "  warning: $SERVICE_USER cannot read $APP_DIR; clone the repository to /opt/wehub_backup"
  fi
}

print_next_steps() {
  cat <<EOF

Next:
  1. Edit $ENV_FILE (Supabase host and user, alert channels).
  2. Put the real passwords into $PGPASSFILE (it stays mode 0600, owner $SERVICE_USER).
  3. Check the machine:        wehub-backup doctor
  4. Back up once by hand:     wehub-backup backup wehub_backup_test
  5. Start the services:       systemctl enable --now ${UNITS[*]}
EOF
}

main() {
  require_root
  ensure_service_user
  install_environment_file
  read_environment_file
  create_directories
  create_log_files
  install_password_file
  install_dagster_yaml
  create_dagster_database
  install_virtualenv
  install_units_and_command
  migrate_dagster_storage
  check_code_is_readable
  print_next_steps
}

main "$@"
