#!/usr/bin/env bash
# tests/setup/borg.sh: make borg 2 (borgbackup 2.0.0b22) available in a venv at
# target/venv-borg, for the end-to-end test that runs borg against a borgstore REST
# server (tests/python/borg_e2e.sh).
#
# Idempotent: when target/venv-borg/bin/borg --version already prints 2.0.0b22 it does
# nothing. Otherwise it installs the Debian packages needed to build borg (apt-get,
# with sudo when not root), creates the venv and pip-installs borg and its deps.
# Exits non-zero with a message naming what to install by hand when it cannot.
#
# Why b22: newer borg 2 betas need OpenSSL >= 3.2 headers, Debian bookworm has 3.0.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/target/venv-borg
BORG_VERSION=2.0.0b22
# borgbackup 2.0.0b22 requires borgstore[rest]~=0.5.5 (the rest extra pulls requests,
# which the http:// repository client uses); pin it so every machine gets the same client.
PY_PACKAGES=("borgbackup==$BORG_VERSION" "borgstore[rest]==0.5.5")
DEB_PACKAGES=(pkg-config libacl1-dev libssl-dev liblz4-dev libzstd-dev libxxhash-dev)

say() { printf 'borg.sh: %s\n' "$*"; }
die() { printf 'borg.sh: error: %s\n' "$*" >&2; exit 1; }

borg_ok() {
    [ -x "$VENV/bin/borg" ] || return 1
    local v
    v=$("$VENV/bin/borg" --version 2>/dev/null) || return 1
    [ "$v" = "borg $BORG_VERSION" ] || return 1
    "$VENV/bin/python" -c 'import requests, borgstore.backends.rest' 2>/dev/null
}

if borg_ok; then
    say "$("$VENV/bin/borg" --version) already in $VENV"
    exit 0
fi

# --- Debian build dependencies ---------------------------------------------------
# (plus a C compiler, and python3 headers / venv support when python3 itself lacks them)
PYTHON=${PYTHON:-python3}
py_has_headers() {
    "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null
}
py_has_venv() { "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; }
missing=()
for p in "${DEB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    missing+=(python3 python3-dev python3-venv)
else
    py_has_headers || missing+=(python3-dev)
    py_has_venv || missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    hint="install them by hand: apt-get install ${missing[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get; $hint"
    sudo=
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "missing packages ${missing[*]}, not root and no sudo; $hint"
        sudo="sudo -n"
    fi
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq || die "apt-get update failed; $hint"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install failed; $hint"
fi
for p in "${DEB_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || die "Debian package $p is still missing: apt-get install $p"
done
command -v cc >/dev/null 2>&1 || die "no C compiler (cc): apt-get install gcc libc6-dev"
py_has_headers || die "$PYTHON has no headers (Python.h): apt-get install python3-dev, or set PYTHON to a python with headers"
py_has_venv || die "$PYTHON cannot make venvs: apt-get install python3-venv"

# --- venv with borg ----------------------------------------------------------------
say "creating $VENV with borgbackup $BORG_VERSION (builds from source, takes a few minutes)"
if [ ! -x "$VENV/bin/pip" ]; then
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed: install python3-venv"
fi
"$VENV/bin/pip" install -q --upgrade pip setuptools wheel || die "pip upgrade failed in $VENV"
export BORG_OPENSSL_PREFIX=/usr
"$VENV/bin/pip" install -q "${PY_PACKAGES[@]}" \
    || die "pip install ${PY_PACKAGES[*]} failed (needs the Debian packages ${DEB_PACKAGES[*]} and python3 headers)"

borg_ok || die "$VENV/bin/borg --version does not print 'borg $BORG_VERSION' (got: $("$VENV/bin/borg" --version 2>&1 || true))"
say "$("$VENV/bin/borg" --version) installed in $VENV"
