# tests/setup/common.sh: shared by the set-up scripts (source it, do not run it).
# Set SETUP_NAME (the script's name, prefixed to messages) before sourcing.
#
#   say MESSAGE...            a progress line on stderr
#   die MESSAGE...            an error line on stderr, exit 1
#   apt_ensure PACKAGE...     install the Debian packages that are missing (apt-get, with
#                             sudo when not root); dies naming what to install by hand
#   ensure_python_build_deps  what pip needs to build borg from source: the Debian
#                             packages in BORG_DEB_PACKAGES, a C compiler, python3 headers
#                             and venv support (PYTHON, default python3)
#   borg_ok                   is borg BORG_VERSION (with the REST client) in VENV?
#   install_borg OPENSSL      make VENV and pip-install PY_PACKAGES, building borg against
#                             the OpenSSL under the prefix OPENSSL

say() { printf '%s: %s\n' "${SETUP_NAME:-setup}" "$*" >&2; }
die() { printf '%s: error: %s\n' "${SETUP_NAME:-setup}" "$*" >&2; exit 1; }

# borg's build dependencies (headers and pkg-config files) on Debian.
BORG_DEB_PACKAGES=(pkg-config libacl1-dev libssl-dev liblz4-dev libzstd-dev libxxhash-dev)
PYTHON=${PYTHON:-python3}

apt_ensure() {
    local missing=() p
    for p in "$@"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local hint="install them by hand: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get; $hint"
    local sudo=
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages ${missing[*]}, not root and no sudo; $hint"
        sudo="sudo -n"
    fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq || die "apt-get update failed; $hint"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install failed; $hint"
    for p in "${missing[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || die "Debian package $p is still missing: apt-get install $p"
    done
}

py_has_headers() {
    "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null
}
py_has_venv() { "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; }

ensure_python_build_deps() {
    local extra=()
    command -v cc >/dev/null 2>&1 || extra+=(gcc libc6-dev)
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        extra+=(python3 python3-dev python3-venv)
    else
        py_has_headers || extra+=(python3-dev)
        py_has_venv || extra+=(python3-venv)
    fi
    apt_ensure "${BORG_DEB_PACKAGES[@]}" "${extra[@]}"
    command -v cc >/dev/null 2>&1 || die "no C compiler (cc): apt-get install gcc libc6-dev"
    py_has_headers || die "$PYTHON has no headers (Python.h): apt-get install python3-dev, or set PYTHON to a python with headers"
    py_has_venv || die "$PYTHON cannot make venvs: apt-get install python3-venv"
}

borg_ok() {
    [ -x "$VENV/bin/borg" ] || return 1
    local v
    v=$("$VENV/bin/borg" --version 2>/dev/null) || return 1
    [ "$v" = "borg $BORG_VERSION" ] || return 1
    "$VENV/bin/python" -c 'import requests, borgstore.backends.rest' 2>/dev/null
}

install_borg() {
    local openssl=$1 start
    start=$(date +%s)
    say "creating $VENV with borgbackup $BORG_VERSION (builds from source, takes a few minutes)"
    if [ ! -x "$VENV/bin/pip" ]; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed: install python3-venv"
    fi
    "$VENV/bin/pip" install -q --upgrade pip setuptools wheel || die "pip upgrade failed in $VENV"
    BORG_OPENSSL_PREFIX=$openssl "$VENV/bin/pip" install -q "${PY_PACKAGES[@]}" \
        || die "pip install ${PY_PACKAGES[*]} failed (needs the Debian packages ${BORG_DEB_PACKAGES[*]}, python3 headers and OpenSSL under $openssl)"
    borg_ok || die "$VENV/bin/borg --version does not print 'borg $BORG_VERSION' (got: $("$VENV/bin/borg" --version 2>&1 || true))"
    say "$("$VENV/bin/borg" --version) installed in $VENV in $(($(date +%s) - start)) s"
}
