#!/usr/bin/env bash
# Makes the PostgreSQL tests runnable here: installs Debian's postgresql server binaries when
# /usr/lib/postgresql/*/bin/initdb is missing, stops the cluster the package starts (the tests
# start throwaway servers of their own, see tests/pg_server.py), and creates the unprivileged
# user those servers run as when this runs as root (PostgreSQL refuses to run as root).
#
# Under CI (CI=true) a failure to install is fatal, since the PostgreSQL tests then fail rather
# than skip; elsewhere it only says what to install.
set -euo pipefail

PG_USER=streamprov-pg

have_binaries() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if ! have_binaries; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ci-postgres: PostgreSQL binaries missing; install them (apt-get install postgresql)" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
  fi
  echo "ci-postgres: installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # the package starts its own cluster; the tests never use it
  service postgresql stop >/dev/null 2>&1 || true
  have_binaries || { echo "ci-postgres: postgresql installed but initdb not found" >&2; exit 1; }
fi

if [ "$(id -u)" -eq 0 ] && ! id -u "$PG_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$PG_USER"
fi
ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
