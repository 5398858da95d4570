#!/usr/bin/env bash
# tests/python/borg_e2e.sh URL WORKDIR
#
# Runs borg 2 (target/venv-borg/bin/borg, made by tests/setup/borg.sh) end to end against
# a borgstore REST server at URL, e.g. http://user:pass@127.0.0.1:PORT/ . The server's
# backend must be empty (or not exist yet): the first step is `borg repo-create`.
#
# Steps: repo-create, create two archives (same series name, the tree changed in
# between), repo-list, list, extract both and compare them with the source trees,
# check --verify-data, prune --keep 1, compact, extract again after compaction, and a
# final check --verify-data. Set BORG_E2E_REPO_DELETE=1 to finish with repo-delete.
#
# Everything borg writes locally (home, config, cache, keys, security dir) stays under
# WORKDIR, which is wiped of this script's own subfolders first. Exits non-zero with a
# message naming the failed step at the first failure.
#
# Small packs (BORG_PACK_MAX_SIZE, default 1 MB here instead of borg's 50 MB) make borg
# write several pack objects so that compact really rewrites packs (server-side defrag).
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 URL WORKDIR   (e.g. $0 http://u:p@127.0.0.1:8080/ /tmp/borgwork)" >&2
    exit 2
fi
URL=$1
WORKDIR=$2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VENV=$ROOT/target/venv-borg
BORG=$VENV/bin/borg
PY=$VENV/bin/python
[ -x "$BORG" ] || { echo "borg_e2e: $BORG missing: run tests/setup/borg.sh first" >&2; exit 1; }

mkdir -p "$WORKDIR"
WORKDIR=$(cd "$WORKDIR" && pwd)
rm -rf "$WORKDIR/home" "$WORKDIR/base" "$WORKDIR/tmp" "$WORKDIR/src" "$WORKDIR/src.v1" \
    "$WORKDIR/extract" "$WORKDIR/logs"
mkdir -p "$WORKDIR/home" "$WORKDIR/base" "$WORKDIR/tmp" "$WORKDIR/extract" "$WORKDIR/logs"

# --- isolated borg environment ------------------------------------------------------
# drop anything from the caller's environment that could point borg elsewhere
unset BORG_REPO BORG_OTHER_REPO BORG_KEYS_DIR BORG_KEY_FILE BORG_CACHE_DIR BORG_CONFIG_DIR \
    BORG_SECURITY_DIR BORG_RUNTIME_DIR BORG_PASSCOMMAND BORG_PASSPHRASE_FD BORG_REPO_PERMISSIONS \
    BORGSTORE_REST_USERNAME BORGSTORE_REST_PASSWORD XDG_CONFIG_HOME XDG_CACHE_HOME \
    XDG_DATA_HOME XDG_STATE_HOME XDG_RUNTIME_DIR
export HOME=$WORKDIR/home
export BORG_BASE_DIR=$WORKDIR/base
export TMPDIR=$WORKDIR/tmp
export BORG_REPO=$URL
export BORG_PASSPHRASE=borg-e2e-passphrase
export BORG_DISPLAY_PASSPHRASE=no
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_PACK_MAX_SIZE=${BORG_PACK_MAX_SIZE:-1000000}
export LANG=C.UTF-8 LC_ALL=C.UTF-8
export TZ=UTC
ARCHIVE=e2e
ENCRYPTION=${BORG_E2E_ENCRYPTION:-aes256-ocb}

SHOWN_URL=$(printf '%s' "$URL" | sed -E 's#(://[^:/@]+):[^@/]*@#\1:***@#')
STEP=setup
T_START=$(date +%s.%N)
T_STEP=$T_START

elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() {
    if [ "$STEP" != setup ]; then echo "   ok ($(elapsed "$T_STEP") s)"; fi
    STEP=$1
    T_STEP=$(date +%s.%N)
    printf '\n== %s\n' "$STEP"
}
fail() {
    FAILED_MSG_DONE=1
    printf '\nborg_e2e: FAILED at step "%s": %s\n' "$STEP" "$*" >&2
    exit 1
}
trap 'rc=$?; [ $rc -eq 0 ] || [ -n "${FAILED_MSG_DONE:-}" ] || printf "\nborg_e2e: FAILED at step \"%s\" (exit %s)\n" "$STEP" "$rc" >&2' EXIT

# borg_run NAME ARGS...: run borg, output to logs/NAME.log and the terminal; fail on rc != 0
# (borg's rc 1 means "warning": for this test that is a failure too).
borg_run() {
    local name=$1; shift
    local log=$WORKDIR/logs/$name.log rc=0
    echo "   \$ borg $*"
    "$BORG" "$@" >"$log" 2>&1 || rc=$?
    if [ $rc -ne 0 ]; then
        head -40 "$log" | sed 's/^/   | /'
        fail "borg $* exited with $rc: $(borg_error "$log") (full log: $log)"
    fi
    # the per-call "Store ..." statistics of --stats stay in the log only
    grep -v '^Store ' "$log" | sed 's/^/   | /' || true
}

# borg_error LOG: the one-line error summary borg prints after "Error:" (or the last line)
borg_error() {
    local msg
    msg=$(awk 'found && NF { print; exit } /^Error:/ { found = 1 }' "$1")
    [ -n "$msg" ] || msg=$(grep -v '^ *$' "$1" | tail -1)
    printf '%s' "${msg:0:300}"
}

# borg_out NAME ARGS...: like borg_run but only stdout goes to logs/NAME.out (for parsing)
borg_out() {
    local name=$1; shift
    local rc=0
    echo "   \$ borg $*"
    "$BORG" "$@" >"$WORKDIR/logs/$name.out" 2>"$WORKDIR/logs/$name.err" || rc=$?
    if [ $rc -ne 0 ]; then
        head -40 "$WORKDIR/logs/$name.err" | sed 's/^/   | /'
        fail "borg $* exited with $rc: $(borg_error "$WORKDIR/logs/$name.err") (stderr: $WORKDIR/logs/$name.err)"
    fi
}

check_or_fail() { # check_or_fail MESSAGE COMMAND...: fail with MESSAGE unless COMMAND succeeds
    local msg=$1; shift
    if ! "$@"; then fail "$msg"; fi
}

echo "borg_e2e: $("$BORG" --version) against $SHOWN_URL, workdir $WORKDIR"
echo "borg_e2e: encryption $ENCRYPTION, BORG_PACK_MAX_SIZE=$BORG_PACK_MAX_SIZE"

# --- the source tree ------------------------------------------------------------------
step "generate the source tree"
"$PY" - "$WORKDIR/src" <<'EOF'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(20240601)
os.makedirs(root)
n = 0
def write(rel, data):
    global n
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    n += 1
# nested dirs with a few hundred small files (text and random, some of them 0 bytes)
for d in range(8):
    for s in range(4):
        for i in range(10):
            rel = f"dir{d}/sub{s}/file{i}.{'txt' if i % 2 else 'bin'}"
            size = rnd.choice([0, 1, 17, 100, 1000, 4096, 10000, 65537])
            if i % 2:
                data = (f"line {d}/{s}/{i} " * (size // 12 + 1)).encode()[:size]
            else:
                data = rnd.randbytes(size)
            write(rel, data)
write("deep/a/b/c/d/e/f/g/leaf.txt", b"deep leaf\n")
write("big-random.bin", rnd.randbytes(4 * 1024 * 1024 + 123))      # a few MiB, incompressible
write("big-text.txt", b"compressible text, repeated\n" * 60000)   # ~1.7 MB, compresses well
write("empty", b"")
write("name with spaces & ünïcödé.txt", "unicode name\n".encode())
os.makedirs(os.path.join(root, "empty-dir"))
os.symlink("big-random.bin", os.path.join(root, "link-to-big"))
os.symlink("dir0/sub0", os.path.join(root, "link-to-dir"))
os.symlink("does/not/exist", os.path.join(root, "dangling-link"))
os.chmod(os.path.join(root, "dir1/sub1/file1.txt"), 0o600)
os.chmod(os.path.join(root, "dir1/sub1/file3.txt"), 0o755)
os.utime(os.path.join(root, "dir2/sub2/file2.bin"), (1_000_000_000, 1_000_000_000))
print(f"   generated {n} files, 3 symlinks, 1 empty dir under {root}")
EOF
(cd "$WORKDIR/src" && du -sh . | sed 's/^/   size /')

# --- repo-create --------------------------------------------------------------------
step "repo-create ($ENCRYPTION)"
borg_run repo-create repo-create -e "$ENCRYPTION"

step "repo-info"
borg_run repo-info repo-info

# --- two archives -------------------------------------------------------------------
cd "$WORKDIR"
step "create archive 1"
borg_run create1 create --stats "$ARCHIVE" src

step "change the tree, create archive 2"
cp -a "$WORKDIR/src" "$WORKDIR/src.v1"
"$PY" - "$WORKDIR/src" <<'EOF'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(7)
with open(os.path.join(root, "dir0/sub0/file1.txt"), "ab") as f:
    f.write(b"appended for archive 2\n")
with open(os.path.join(root, "dir3/sub1/file0.bin"), "wb") as f:
    f.write(rnd.randbytes(300000))
with open(os.path.join(root, "new-in-v2.bin"), "wb") as f:
    f.write(rnd.randbytes(700000))
os.remove(os.path.join(root, "dir4/sub3/file9.txt"))
# change the middle of the big file: most chunks stay the same (dedup), some are new
with open(os.path.join(root, "big-random.bin"), "r+b") as f:
    f.seek(2 * 1024 * 1024)
    f.write(rnd.randbytes(4096))
EOF
sleep 1  # a distinct archive timestamp
borg_run create2 create --stats "$ARCHIVE" src

# --- repo-list / list ---------------------------------------------------------------
step "repo-list (expect 2 archives)"
borg_run repo-list repo-list
borg_out repo-list-ids repo-list --format '{id} {archive}{NL}'
mapfile -t IDS < <(awk '{print $1}' "$WORKDIR/logs/repo-list-ids.out")
NAMES=$(awk '{print $2}' "$WORKDIR/logs/repo-list-ids.out" | sort -u | tr '\n' ' ')
check_or_fail "expected 2 archives, repo-list shows ${#IDS[@]}" [ "${#IDS[@]}" -eq 2 ]
check_or_fail "expected archive names '$ARCHIVE', got '$NAMES'" [ "$NAMES" = "$ARCHIVE " ]
# repo-list sorts by timestamp: the first is archive 1
ID1=${IDS[0]}
ID2=${IDS[1]}
echo "   archive 1: $ID1"
echo "   archive 2: $ID2"

# expected_paths DIR: the paths borg should list for DIR (relative to WORKDIR), sorted
expected_paths() {
    (cd "$WORKDIR" && find "$1" -mindepth 0 | sed "s#^$1#src#" | LC_ALL=C sort)
}
step "list (expect every source path in each archive)"
for n in 1 2; do
    if [ $n = 1 ]; then id=$ID1; tree=src.v1; else id=$ID2; tree=src; fi
    borg_out list$n list --short "aid:$id"
    LC_ALL=C sort "$WORKDIR/logs/list$n.out" >"$WORKDIR/logs/list$n.sorted"
    expected_paths "$tree" >"$WORKDIR/logs/list$n.expected"
    if ! diff -u "$WORKDIR/logs/list$n.expected" "$WORKDIR/logs/list$n.sorted" >"$WORKDIR/logs/list$n.diff"; then
        head -40 "$WORKDIR/logs/list$n.diff" | sed 's/^/   | /'
        fail "borg list of archive $n differs from the source tree (see $WORKDIR/logs/list$n.diff)"
    fi
    echo "   archive $n: $(wc -l <"$WORKDIR/logs/list$n.sorted") paths, as expected"
done
borg_run list2-long list "aid:$ID2" src/big-random.bin src/link-to-big src/empty

# --- extract and compare ------------------------------------------------------------
# compare_trees A B: byte-identical contents, same types, symlink targets, modes, mtimes
compare_trees() {
    "$PY" - "$1" "$2" <<'EOF'
import os, stat, sys
a, b = sys.argv[1], sys.argv[2]
problems = []
def walk(top):
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, top)] = p
    return out
ta, tb = walk(a), walk(b)
for rel in sorted(set(ta) - set(tb)):
    problems.append(f"missing in extract: {rel}")
for rel in sorted(set(tb) - set(ta)):
    problems.append(f"extra in extract: {rel}")
for rel in sorted(set(ta) & set(tb)):
    sa, sb = os.lstat(ta[rel]), os.lstat(tb[rel])
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        problems.append(f"type differs: {rel}")
        continue
    if stat.S_ISLNK(sa.st_mode):
        if os.readlink(ta[rel]) != os.readlink(tb[rel]):
            problems.append(f"symlink target differs: {rel}")
        continue
    if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        problems.append(f"mode differs: {rel} {oct(sa.st_mode)} != {oct(sb.st_mode)}")
    if sa.st_mtime_ns != sb.st_mtime_ns:
        problems.append(f"mtime differs: {rel} {sa.st_mtime_ns} != {sb.st_mtime_ns}")
    if stat.S_ISREG(sa.st_mode):
        with open(ta[rel], "rb") as fa, open(tb[rel], "rb") as fb:
            while True:
                ca, cb = fa.read(1 << 20), fb.read(1 << 20)
                if ca != cb:
                    problems.append(f"content differs: {rel}")
                    break
                if not ca:
                    break
for p in problems[:40]:
    print("   | " + p)
if problems:
    print(f"   {len(problems)} differences")
    sys.exit(1)
print(f"   identical: {len(ta)} entries")
EOF
}

extract_and_compare() { # extract_and_compare LABEL ID SOURCE_TREE
    local label=$1 id=$2 tree=$3
    local dest=$WORKDIR/extract/$label
    rm -rf "$dest"
    mkdir -p "$dest"
    echo "   \$ (cd $dest && borg extract aid:$id)"
    (cd "$dest" && "$BORG" extract "aid:$id" >"$WORKDIR/logs/extract-$label.log" 2>&1) || {
        head -40 "$WORKDIR/logs/extract-$label.log" | sed 's/^/   | /'
        fail "borg extract aid:$id failed: $(borg_error "$WORKDIR/logs/extract-$label.log") (log: $WORKDIR/logs/extract-$label.log)"
    }
    sed 's/^/   | /' "$WORKDIR/logs/extract-$label.log"
    if ! compare_trees "$WORKDIR/$tree" "$dest/src"; then
        fail "extracted archive ($label) differs from $WORKDIR/$tree"
    fi
    # independent second opinion on the contents
    diff -r --no-dereference "$WORKDIR/$tree" "$dest/src" >/dev/null \
        || { fail "diff -r: extracted archive ($label) differs from $WORKDIR/$tree"; }
}

step "extract archive 1 and compare with the source tree at that time"
extract_and_compare v1 "$ID1" src.v1
step "extract archive 2 and compare with the current source tree"
extract_and_compare v2 "$ID2" src

# --- check, prune, compact ----------------------------------------------------------
step "check --verify-data"
borg_run check1 check --verify-data

step "prune --keep 1 $ARCHIVE (expect archive 2 left)"
borg_run prune prune --list --keep 1 "$ARCHIVE"
borg_out repo-list-after-prune repo-list --format '{id} {archive}{NL}'
mapfile -t LEFT < <(awk '{print $1}' "$WORKDIR/logs/repo-list-after-prune.out")
check_or_fail "expected 1 archive after prune, repo-list shows ${#LEFT[@]}" [ "${#LEFT[@]}" -eq 1 ]
check_or_fail "prune kept ${LEFT[0]}, expected the newer archive $ID2" [ "${LEFT[0]}" = "$ID2" ]
echo "   1 archive left: ${LEFT[0]}"

step "compact"
borg_run compact compact --info --stats

step "extract archive 2 again after compact and compare"
extract_and_compare v2-after-compact "$ID2" src

step "final check --verify-data"
borg_run check2 check --verify-data

step "final repo-info"
borg_run repo-info2 repo-info

if [ "${BORG_E2E_REPO_DELETE:-0}" = 1 ]; then
    step "repo-delete"
    BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES borg_run repo-delete repo-delete
    if "$BORG" repo-info >"$WORKDIR/logs/repo-info-after-delete.log" 2>&1; then
        fail "repo-info still works after repo-delete"
    fi
    echo "   repository is gone"
fi

echo "   ok ($(elapsed "$T_STEP") s)"
printf '\nborg_e2e: PASSED all steps in %s s against %s\n' "$(elapsed "$T_START")" "$SHOWN_URL"
