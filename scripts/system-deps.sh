#!/usr/bin/env bash
# Installs the system programs the test suite runs for real when they are missing:
# PostgreSQL server binaries (scripts/ci-postgres.sh), chrony (an upstream NTP server for the
# clock tests) and chromium (the dashboard's browser tests). Needs root for apt-get; without it, says what to install and carries on
# (those tests then skip; under CI=true they fail instead).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

bash "$here/ci-postgres.sh" >/dev/null

missing=()
command -v chronyd >/dev/null 2>&1 || [ -x /usr/sbin/chronyd ] || missing+=(chrony)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
  fi
  echo "system-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # chrony starts the system's NTP daemon; the tests start private instances instead
  service chrony stop >/dev/null 2>&1 || true
fi
