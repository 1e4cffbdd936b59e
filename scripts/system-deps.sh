#!/usr/bin/env bash
# Installs the system programs the test suite runs for real (PostgreSQL server binaries,
# chrony as an upstream NTP server) when they are missing. Needs root for apt-get; without
# it, says what to install and carries on (those tests then skip, or fail under CI=true).
set -euo pipefail

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v chronyd >/dev/null 2>&1 || [ -x /usr/sbin/chronyd ] || missing+=(chrony)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: please install: ${missing[*]} (tests needing them will skip)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the packages start their own services; the tests start private instances instead
systemctl stop chrony postgresql >/dev/null 2>&1 || true
service chrony stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
