#!/usr/bin/env bash
# Installs and starts what the test suite needs from the machine itself (Debian):
# Postfix and swaks for interop tests, Debian's chromium and chromium-driver for the console's
# browser tests (Selenium drives /usr/bin/chromium; no browser is ever downloaded), and a running
# PostgreSQL. Idempotent; safe to re-run.
set -euo pipefail

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: need root to apt-get install ${need[*]}" >&2; exit 1
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# PostgreSQL: the tests use a real server (127.0.0.1:5432 unless MAILRELAY_TEST_PG_DSN says otherwise).
if [ -z "${MAILRELAY_TEST_PG_DSN:-}" ] && command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi
