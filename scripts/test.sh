#!/usr/bin/env bash
# The test command: installs what the tests need, then runs the checks and
# the whole suite (unit tests and end-to-end tests over real sockets, a real
# redis-server and a real headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked "$@"
