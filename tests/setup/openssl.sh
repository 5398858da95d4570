#!/usr/bin/env bash
# tests/setup/openssl.sh: OpenSSL 3.6 headers and static libraries for building borg
# 2.0.0b25 (which needs OpenSSL >= 3.2; Debian bookworm has 3.0). Prints the install
# prefix (with include/ and lib/) as the last line on standard output; messages go to
# standard error.
#
# Built once per machine from the openssl-src crate (tests/setup/openssl/, its own cargo
# workspace) and cached outside the clone, so a second run or a fresh clone on the same
# machine finds it:
#     ${BORGSTORE_TESTS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/borgstore-tests}/openssl-3.6.3
# The build happens in a scratch directory next to it and is moved into place only when
# complete (a broken or interrupted build never looks cached); concurrent runs wait for
# each other (flock). Needs cargo (with crates.io), perl, make and a C compiler; a
# missing tool is installed with apt-get or named in the error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SETUP_NAME=openssl.sh
# shellcheck source=tests/setup/common.sh
. "$ROOT/tests/setup/common.sh"

# The OpenSSL version that openssl-src (pinned in tests/setup/openssl/Cargo.toml) bundles.
OPENSSL_VERSION=3.6.3
CACHE=${BORGSTORE_TESTS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/borgstore-tests}
PREFIX=$CACHE/openssl-$OPENSSL_VERSION
SCRATCH=$CACHE/openssl-$OPENSSL_VERSION.build

installed() {
    [ -f "$PREFIX/lib/libcrypto.a" ] && [ -f "$PREFIX/include/openssl/opensslv.h" ] \
        && grep -q "OPENSSL_VERSION_STR \"$OPENSSL_VERSION\"" "$PREFIX/include/openssl/opensslv.h"
}

if installed; then
    say "OpenSSL $OPENSSL_VERSION cached in $PREFIX"
    echo "$PREFIX"
    exit 0
fi

command -v cargo >/dev/null 2>&1 || die "cargo is missing: install Rust with rustup (https://rustup.rs)"
command -v perl >/dev/null 2>&1 || apt_ensure perl
command -v make >/dev/null 2>&1 || apt_ensure make
command -v cc >/dev/null 2>&1 || apt_ensure gcc libc6-dev
for tool in perl make cc; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: apt-get install perl make gcc libc6-dev"
done
command -v flock >/dev/null 2>&1 || apt_ensure util-linux

mkdir -p "$CACHE"
exec 9>"$CACHE/openssl-$OPENSSL_VERSION.lock"
flock 9
if installed; then  # another run built it while we waited
    say "OpenSSL $OPENSSL_VERSION cached in $PREFIX"
    echo "$PREFIX"
    exit 0
fi

say "building OpenSSL $OPENSSL_VERSION from the openssl-src crate into $PREFIX (once per machine, a few minutes)"
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
start=$(date +%s)
OSSL_PREFIX=$SCRATCH/out cargo build --quiet --locked \
    --manifest-path "$ROOT/tests/setup/openssl/Cargo.toml" --target-dir "$SCRATCH/target" >&2 \
    || die "building OpenSSL failed (see the output above; needs crates.io, perl, make and a C compiler)"
[ -f "$SCRATCH/out/install/lib/libcrypto.a" ] && [ -f "$SCRATCH/out/install/include/openssl/opensslv.h" ] \
    || die "the OpenSSL build left no $SCRATCH/out/install/lib/libcrypto.a or include/openssl/opensslv.h"
rm -rf "$PREFIX"
mv "$SCRATCH/out/install" "$PREFIX"
rm -rf "$SCRATCH"
installed || die "$PREFIX does not hold OpenSSL $OPENSSL_VERSION after the build (was the openssl-src pin changed?)"
say "OpenSSL $OPENSSL_VERSION built in $(($(date +%s) - start)) s, installed in $PREFIX"
echo "$PREFIX"
