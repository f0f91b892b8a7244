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

# The glommio the build uses: the crates.io release with the patches in `patches/`, unpacked
# into `vendor/` (not in git; Cargo.toml's `[patch.crates-io]` points there). The release comes
# from cargo's own download cache (fetched through cargo when missing) and is checked against
# its crates.io checksum. Redone when the patch changes.
PK_GLOMMIO_VERSION=0.9.0
PK_GLOMMIO_SHA256=e1f8bc1fce949d18098dc0a4e861314e40351a0144ebf61e59bdb5254a2273b2

# Prints the path of a downloaded crates.io release (NAME VERSION), fetching it with cargo if
# no registry cache holds it yet.
pk_crate_file() {
  local name="$1" version="$2" home="${CARGO_HOME:-$HOME/.cargo}" found dir
  found="$(ls "$home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -1)"
  if [[ -z "$found" ]]; then
    dir="$(mktemp -d)"
    printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[lib]\npath = "lib.rs"\n[dependencies]\n%s = "=%s"\n' \
      "$name" "$version" > "$dir/Cargo.toml"
    touch "$dir/lib.rs"
    echo "prereqs: cargo fetch $name $version" >&2
    (cd "$dir" && cargo fetch --quiet) >&2
    rm -rf "$dir"
    found="$(ls "$home"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -1)"
  fi
  [[ -n "$found" ]] || { echo "prereqs: cannot download $name $version" >&2; return 1; }
  echo "$found"
}

# pk_need_patched_glommio ROOT: ROOT/vendor/glommio-<version> holds the patched release.
pk_need_patched_glommio() {
  local root="$1" dir patches want crate sum tmp p
  dir="$root/vendor/glommio-$PK_GLOMMIO_VERSION"
  patches=("$root"/patches/glommio-"$PK_GLOMMIO_VERSION"-*.patch)
  want="$PK_GLOMMIO_SHA256 $(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
  if [[ -f "$dir/.paxoskv-patched" && "$(cat "$dir/.paxoskv-patched")" == "$want" ]]; then
    return 0
  fi
  pk_need_command patch patch
  crate="$(pk_crate_file glommio "$PK_GLOMMIO_VERSION")"
  sum="$(sha256sum "$crate" | cut -d' ' -f1)"
  if [[ "$sum" != "$PK_GLOMMIO_SHA256" ]]; then
    echo "prereqs: $crate has checksum $sum, crates.io publishes $PK_GLOMMIO_SHA256" >&2
    return 1
  fi
  tmp="$dir.tmp"
  rm -rf "$tmp" "$dir"
  mkdir -p "$tmp"
  tar -xzf "$crate" -C "$tmp" --strip-components=1
  for p in "${patches[@]}"; do
    patch -d "$tmp" -p1 --quiet --forward < "$p" \
      || { echo "prereqs: $p does not apply to glommio $PK_GLOMMIO_VERSION" >&2; return 1; }
  done
  echo "$want" > "$tmp/.paxoskv-patched"
  mv "$tmp" "$dir"
  echo "prereqs: glommio $PK_GLOMMIO_VERSION patched into ${dir#"$root"/}" >&2
}
