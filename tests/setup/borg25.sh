#!/usr/bin/env bash
# tests/setup/borg25.sh: make borg 2.0.0b25 available in a venv at target/venv-borg25,
# for the tests of our binary as the remote side of borg's ssh:// repositories
# (tests/tests/borg_serve.rs): b25 is the first version tested here that has
# `borg serve --rest` (borg.sh's b22 does not).
#
# Idempotent: when target/venv-borg25/bin/borg --version already prints 2.0.0b25 it does
# nothing. Otherwise it installs the Debian packages needed to build borg (apt-get, with
# sudo when not root), gets OpenSSL >= 3.2 from tests/setup/openssl.sh (built once per
# machine and cached outside the clone: b25 needs OpenSSL >= 3.2 headers, Debian
# bookworm has 3.0; it is linked statically into borg), creates the venv and
# pip-installs borg (built from the PyPI sdist) and its pinned borgstore.
# Exits non-zero with a message naming what to install by hand when it cannot.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/target/venv-borg25
BORG_VERSION=2.0.0b25
# b25 requires borgstore[rest,blake3]~=0.7.0: pin it so every machine gets the same client.
PY_PACKAGES=("borgbackup==$BORG_VERSION" "borgstore[rest,blake3]==0.7.0")
SETUP_NAME=borg25.sh
# shellcheck source=tests/setup/common.sh
. "$ROOT/tests/setup/common.sh"


if borg_ok; then
    say "$("$VENV/bin/borg" --version) already in $VENV"
    exit 0
fi

ensure_python_build_deps
OPENSSL_PREFIX=$("$ROOT/tests/setup/openssl.sh" | tail -1) || die "tests/setup/openssl.sh failed"
[ -f "$OPENSSL_PREFIX/lib/libcrypto.a" ] || die "tests/setup/openssl.sh gave no OpenSSL ($OPENSSL_PREFIX)"

# setup.py takes include/ and lib/ from there; lib/ holds only static libraries, so the
# OpenSSL 3.6 code is linked into borg's extension (no clash with the system's 3.0).
install_borg "$OPENSSL_PREFIX"
