#!/usr/bin/env bash
# Installs what building and testing paxoskv needs on a fresh Debian machine, and nothing that is
# already there: libclang (bindgen for the bundled RocksDB), the Thrift compiler (code generation
# and the Python client test) and the Python Thrift library. It also prepares the patched glommio
# the build uses (`vendor/`, from `patches/`; see Cargo.toml's `[patch.crates-io]`).
#
# Every check asks the thing itself, never the working directory: Python runs from an empty
# temporary directory (run from the repository root, `import thrift` finds the IDL folder
# `thrift/` as an empty namespace package and succeeds without the library), Debian packages are
# checked by their installed status (a removed package keeps a `dpkg -s` record), and commands
# are run, not just looked up. `scripts/setup.sh --versions` prints what was found.
set -euo pipefail
source "$(dirname "$0")/prereqs.sh"

pk_need_apt libclang-dev clang thrift-compiler
pk_need_command thrift thrift-compiler
pk_need_libclang
pk_need_python_module thrift.protocol.TBinaryProtocol thrift
pk_need_patched_glommio "$(cd "$(dirname "$0")/.." && pwd)"
if [[ "${1:-}" == "--versions" ]]; then pk_print_versions; fi
