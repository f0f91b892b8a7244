#!/usr/bin/env bash
# Prerequisite checks shared by scripts/ and perf/: each one asks the installed thing itself (a
# command that runs, a module imported from a neutral directory, a package's installed status)
# and installs what is missing from Debian or PyPI. Sourced, never run.

pk_apt_updated=0
pk_apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [[ $pk_apt_updated == 0 ]]; then apt-get update -qq; pk_apt_updated=1; fi
  echo "prereqs: apt-get install $*" >&2
  apt-get install -y -qq "$@" >/dev/null
}

# True when the Debian package is installed (not merely known, removed or half-configured).
pk_apt_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

# pk_need_apt PKG...: installs the packages that are not installed.
pk_need_apt() {
  local missing=() p
  for p in "$@"; do pk_apt_installed "$p" || missing+=("$p"); done
  if [[ ${#missing[@]} -gt 0 ]]; then pk_apt_install "${missing[@]}"; fi
}

# pk_need_command CMD PKG [VERSION_ARG]: CMD must run (`CMD --version` exits 0); installs PKG if not.
pk_need_command() {
  local cmd="$1" pkg="$2" arg="${3:---version}"
  if ! "$cmd" "$arg" >/dev/null 2>&1; then pk_apt_install "$pkg"; fi
  "$cmd" "$arg" >/dev/null 2>&1 || { echo "prereqs: '$cmd $arg' still fails after installing $pkg" >&2; return 1; }
}

# The shared library bindgen loads (libclang-dev pulls it in); found by file, not by package.
pk_libclang_path() {
  ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-*.so* 2>/dev/null | head -1
}
pk_need_libclang() {
  if [[ -z "$(pk_libclang_path)" ]]; then pk_apt_install libclang-dev; fi
  [[ -n "$(pk_libclang_path)" ]] || { echo "prereqs: no libclang.so after installing libclang-dev" >&2; return 1; }
}

# Runs python3 from an empty directory, so nothing in the caller's directory shadows a module.
pk_python_neutral() {
  local dir rc=0
  dir="$(mktemp -d)"
  (cd "$dir" && python3 "$@") || rc=$?
  rmdir "$dir"
  return $rc
}

# pk_need_python_module MODULE PIP_PACKAGE: MODULE must import from a neutral directory.
pk_need_python_module() {
  local module="$1" pkg="$2"
  if ! pk_python_neutral -c "import $module" >/dev/null 2>&1; then
    if ! pk_python_neutral -m pip --version >/dev/null 2>&1; then pk_apt_install python3-pip; fi
    echo "prereqs: pip install $pkg (python3 is $(command -v python3))" >&2
    pk_python_neutral -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$pkg"
  fi
  pk_python_neutral -c "import $module" >/dev/null 2>&1 \
    || { echo "prereqs: python3 cannot import $module after installing $pkg" >&2; return 1; }
}

# Prints the version and location of each prerequisite the build and the tests rely on.
pk_print_versions() {
  echo "prereqs: rustc:    $(rustc --version 2>&1) ($(command -v rustc))"
  echo "prereqs: cargo:    $(cargo --version 2>&1)"
  echo "prereqs: thrift:   $(thrift --version 2>&1) ($(command -v thrift))"
  echo "prereqs: libclang: $(pk_libclang_path) (libclang-dev $(dpkg-query -W -f='${Version}' libclang-dev 2>/dev/null))"
  echo "prereqs: python3:  $(python3 --version 2>&1) ($(command -v python3))"
  echo "prereqs: python thrift: $(pk_python_neutral -c 'import thrift, thrift.protocol.TBinaryProtocol as b; from importlib.metadata import version; print(version("thrift"), "from", thrift.__file__)' 2>&1)"
}
