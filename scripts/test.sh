#!/usr/bin/env bash
# The test command: prerequisites, then every test in the release profile (one profile, so the
# bundled RocksDB is built once), then the client library on its own (no RocksDB, no glommio:
# what a `default-features = false, features = ["client"]` user builds). Extra arguments go to
# the first `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --release "$@"
cargo test --release --no-default-features --features client --lib
