#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the decoders that read bytes from outside:
# the Thrift message walker and decoder, the replica protocol (handshake, messages, envelopes,
# snapshot chunks), WAL recovery from segment bytes, and config files. Not part of CI (it needs
# the nightly toolchain and its own build of RocksDB); CI runs the seeded equivalents in
# tests/decoders_fuzz.rs on stable.
#
# Usage: scripts/fuzz.sh [TARGET...]     (default: every target in fuzz/fuzz_targets)
# Environment: FUZZ_SECONDS=60 per target; FUZZ_JOBS=1; FUZZ_TARGET_DIR=$HOME/.cache/paxoskv-fuzz
#   Corpora grow in fuzz/corpus/<target>; a crash is written to fuzz/artifacts/<target>/ and
#   the script exits non-zero. Inputs that found bugs are committed under fuzz/regressions/
#   and replayed first.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/scripts/prereqs.sh"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
JOBS="${FUZZ_JOBS:-1}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/paxoskv-fuzz}"
export PATH="$HOME/.cargo/bin:$PATH"

pk_need_apt libclang-dev clang
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo +nightly install --locked cargo-fuzz
fi

cd "$ROOT/fuzz"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  for f in fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi
# No sanitizer: RocksDB's C++ is linked in and is not built for ASan; Rust's own checks
# (bounds, overflow in debug assertions) and libFuzzer's crash and timeout detection remain.
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  if [[ -d "regressions/$t" ]]; then
    echo "fuzz: $t: replaying fuzz/regressions/$t" >&2
    cargo +nightly fuzz run -s none -O "$t" "regressions/$t" -- -runs=0 >&2
  fi
  echo "fuzz: $t for ${SECONDS_EACH}s" >&2
  cargo +nightly fuzz run -s none -O -j "$JOBS" "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 >&2
done
echo "fuzz: ${targets[*]}: no crash in ${SECONDS_EACH}s each" >&2
