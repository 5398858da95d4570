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
# Why b22: it is the borg 2 of the http:// end-to-end test and of the old repository
# layout (data/). Newer betas need OpenSSL >= 3.2 headers (Debian bookworm has 3.0):
# borg25.sh builds b25 against a cached OpenSSL for the `borg serve --rest` tests.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/target/venv-borg
BORG_VERSION=2.0.0b22
# borgbackup 2.0.0b22 requires borgstore[rest]~=0.5.5 (the rest extra pulls requests,
# which the http:// repository client uses); pin it so every machine gets the same client.
PY_PACKAGES=("borgbackup==$BORG_VERSION" "borgstore[rest]==0.5.5")
SETUP_NAME=borg.sh
# shellcheck source=tests/setup/common.sh
. "$ROOT/tests/setup/common.sh"


if borg_ok; then
    say "$("$VENV/bin/borg" --version) already in $VENV"
    exit 0
fi

# --- Debian build dependencies ---------------------------------------------------
# (plus a C compiler, and python3 headers / venv support when python3 itself lacks them)
ensure_python_build_deps

install_borg /usr
