#!/usr/bin/env bash
# Installs what building and testing paxoskv needs on a fresh Debian machine, and nothing that is
# already there: libclang (bindgen for the bundled RocksDB), the Thrift compiler (code generation
# and the Python client test) and the Python Thrift library.
set -euo pipefail
missing=()
for pkg in libclang-dev clang thrift-compiler; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import thrift' >/dev/null 2>&1; then
  echo "setup: installing the python thrift package" >&2
  python3 -m pip install --quiet --disable-pip-version-check thrift
fi
