#!/usr/bin/env bash
# The PostgreSQL server and client programs come from the system, not from PyPI.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  echo "PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql postgresql-contrib)" >&2
  exit 1
fi
