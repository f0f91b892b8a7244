#!/usr/bin/env bash
# The test command: prerequisites, then every test in the release profile (one profile, so the
# bundled RocksDB is built once). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --release "$@"
