#!/usr/bin/env python3
"""Drive the REAL Python borgstore REST client against a REST server and check its behaviour.

The expected behaviour is what the Python reference server (`borgstore-server-rest` from
borgstore 0.7.0, serving a `file:` backend) does. The script works with the borgstore client
versions 0.7.0 and 0.5.5 (0.5.5 needs no gather, and has no mtime in its ItemInfo); where the
versions differ, the code branches on `borgstore.__version__` and says so.

Usage (the Python running this must have `borgstore`, `requests` and `blake3` installed):

    rest_client_suite.py backend   URL   # full backend API; nothing may exist at URL yet
    rest_client_suite.py store     URL   # borgstore.store.Store on URL; nothing may exist at URL yet
    rest_client_suite.py roundtrip URL   # short round trip on an existing store (created if missing)

URL is anything `borgstore.store.get_backend` turns into a REST backend:

    http://user:pass@127.0.0.1:5618/     # a REST server over TCP (credentials optional)
    http://127.0.0.1:8080/some/prefix/   # e.g. behind a reverse proxy
    rest:////abs/path/to/store           # the client starts `borgstore-server-rest --stdio
                                         #   --backend FILE:/abs/path/to/store` from PATH

Mind the slashes of rest:// URLs: the client takes the "/" after the (empty) host as a
separator, so rest:///tmp/x/store becomes FILE:tmp/x/store, a path relative to the current
directory. Use four slashes for an absolute path. The script prints the stdio command.

Modes:

backend    REST backend methods one by one: client-side open/closed state errors, create
           (again), mkdir/rmdir, store/load (empty, small, ~5 MiB, byte ranges), info, list,
           delete, move, hash (several algorithms, compared with local hashlib/blake3),
           gather and defrag (if the client has them), quota, invalid names (client- and
           server-side), a few raw HTTP protocol details (406, 422, 400, 401, Cache-Control),
           close, destroy (again).
store      borgstore.store.Store with config {"data/": {"levels": [2]}, "": {"levels": [0]}}:
           create, many keys, nesting, soft delete / undelete, change_level, ranged loads,
           hash, gather / defrag (if available), quota, destroy.
roundtrip  store / load / list / soft delete / undelete / delete with fresh random keys on
           an existing store (e.g. behind nginx); leaves the store's previous contents alone.

Exit status 0 and a last line "OK <mode> <n> checks" on success. On the first failed check,
exit status 1 and a line "FAIL <mode>: <check>: expected ..., got ...". Lines starting with
"SKIP" tell what was not tested with this client version (and why).
"""

import hashlib
import json
import random
import sys
import traceback

import borgstore
from borgstore.backends._base import ItemInfo
from borgstore.backends.errors import (
    BackendAlreadyExists,
    BackendDoesNotExist,
    BackendMustBeOpen,
    BackendMustNotBeOpen,
    ObjectNotFound,
    ReadRangeError,
)
from borgstore.store import Store, get_backend

try:
    import blake3 as blake3_module
except ImportError:  # blake3 checks are skipped (and reported) then
    blake3_module = None

VERSION = tuple(int(part) for part in borgstore.__version__.split(".")[:3] if part.isdigit())
ACCEPT = "application/vnd.x.borgstore.rest.v1"
STORE_CONFIG = {"data/": {"levels": [2]}, "": {"levels": [0]}}
MiB = 1024 * 1024


class CheckFailed(Exception):
    pass


def short(value):
    """A readable representation of a (possibly huge) value for failure messages."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        if len(value) <= 48:
            return repr(value)
        return f"<{len(value)} bytes sha256={hashlib.sha256(value).hexdigest()[:16]} head={value[:16]!r}>"
    text = repr(value)
    return text if len(text) <= 400 else text[:400] + "..."


def local_hash(algorithm, data):
    if algorithm == "blake3":
        return blake3_module.blake3(data).hexdigest()
    return hashlib.new(algorithm, data).hexdigest()


def nest(name, levels):
    """namespace/0123abcd --2--> namespace/01/23/0123abcd (same as borgstore.utils.nesting.nest)."""
    if levels == 0:
        return name
    namespace, _, key = name.rpartition("/")
    parts = [key[2 * i : 2 * i + 2] for i in range(levels)] + [key]
    return "/".join(([namespace] if namespace else []) + parts)


class Suite:
    """Counts checks, stops at the first failure (raising CheckFailed)."""

    def __init__(self, mode):
        self.mode = mode
        self.count = 0
        self.skipped = []

    def check(self, condition, what, expected=None, got=None):
        self.count += 1
        if not condition:
            detail = "" if expected is None and got is None else f": expected {expected}, got {got}"
            raise CheckFailed(f"{what}{detail}")

    def eq(self, got, expected, what):
        self.check(got == expected, what, short(expected), short(got))

    def raises(self, exc_class, func, what):
        """func() must raise exc_class (a class or tuple); returns the exception."""
        self.count += 1
        name = getattr(exc_class, "__name__", None) or " or ".join(c.__name__ for c in exc_class)
        try:
            result = func()
        except exc_class as exc:
            return exc
        except Exception as exc:
            raise CheckFailed(f"{what}: expected {name}, got {type(exc).__name__}: {exc}") from exc
        raise CheckFailed(f"{what}: expected {name}, got no exception (result {short(result)})")

    def skip(self, what, why):
        line = f"SKIP {what}: {why}"
        self.skipped.append(line)
        print(line, flush=True)


# ---------------------------------------------------------------------------------------------
# raw HTTP helpers (bypass the client's own validation / error mapping)


def raw(backend, method, name="", *, params=None, data=None, headers=None):
    """Send one raw request through the backend's open session (works over TCP and stdio)."""
    return backend._request(method, backend._url(name), params=params, data=data, headers=headers or {})


def is_http_url(url):
    return url.startswith(("http://", "https://"))


# ---------------------------------------------------------------------------------------------
# mode: backend


def backend_mode(s, url):
    be = get_backend(url)
    s.check(be is not None, "get_backend returns a backend", "a REST backend", be)
    s.eq(type(be).__name__, "REST", "get_backend gives the REST backend class")
    has_gather = hasattr(be, "gather")  # REST.gather is new in 0.7.0, 0.5.5 does not have it
    has_defrag = hasattr(be, "defrag")  # both 0.5.5 and 0.7.0 have it
    has_mtime = "mtime" in ItemInfo._fields  # ItemInfo.mtime is new in 0.7.0

    # --- client-side state checks: nothing is sent to the server here
    not_open_calls = {
        "info": lambda: be.info("x"),
        "load": lambda: be.load("x"),
        "store": lambda: be.store("x", b"v"),
        "delete": lambda: be.delete("x"),
        "move": lambda: be.move("x", "y"),
        "mkdir": lambda: be.mkdir("x"),
        "rmdir": lambda: be.rmdir("x"),
        "list": lambda: list(be.list("")),
        "hash": lambda: be.hash("x"),
        "quota": lambda: be.quota(),
        "close": lambda: be.close(),
    }
    if has_gather:
        not_open_calls["gather"] = lambda: be.gather([])
    if has_defrag:
        not_open_calls["defrag"] = lambda: be.defrag([], target="x")
    for op, call in not_open_calls.items():
        s.raises(BackendMustBeOpen, call, f"{op} before open -> BackendMustBeOpen")

    # --- the backend does not exist yet (checked harmlessly first: never destroy someone's store)
    be.open()
    s.raises(BackendDoesNotExist, lambda: be.info(""),
             "info('') on a missing backend -> BackendDoesNotExist (410) [backend mode needs a URL without a store]")
    s.raises(BackendDoesNotExist, lambda: be.store("x", b"v"), "store on a missing backend -> BackendDoesNotExist")
    s.raises(BackendDoesNotExist, lambda: list(be.list("")), "list on a missing backend -> BackendDoesNotExist")
    be.close()
    s.raises(BackendDoesNotExist, be.destroy, "destroy of a backend that does not exist -> BackendDoesNotExist")

    # --- create
    be.create()
    be.open()
    s.raises(BackendMustNotBeOpen, be.open, "open while open -> BackendMustNotBeOpen")
    s.raises(BackendMustNotBeOpen, be.create, "create while open -> BackendMustNotBeOpen")
    s.raises(BackendMustNotBeOpen, be.destroy, "destroy while open -> BackendMustNotBeOpen")
    root = be.info("")
    s.check(root.exists and root.directory, "info('') of a fresh backend: existing directory", "dir", root)
    s.eq([i.name for i in be.list("")], [], "list('') of a fresh backend is empty")
    quota = be.quota()
    check_quota(s, quota)
    be.close()
    if quota["limit"] == -1:
        # posixfs accepts an already existing, *empty* base directory on create.
        be.create()
        s.check(True, "create again on an existing but empty backend succeeds")
    else:
        s.skip("create again on an empty backend", "server has a quota (quota.hid makes the backend non-empty)")

    if not has_mtime:
        s.skip("mtime of info() and list()", f"borgstore {borgstore.__version__} ItemInfo has no mtime")
    be.open()
    check_directories(s, be)
    values = check_store_load(s, be, has_mtime)
    check_ranges(s, be, values)
    check_info_and_list(s, be, values, has_mtime)
    check_delete_move(s, be)
    check_hash(s, be, values)
    if has_gather:
        check_gather(s, be, values)
    else:
        s.skip("gather", f"borgstore {borgstore.__version__} REST client has no gather()")
    if has_defrag:
        check_defrag(s, be, values)
    else:
        s.skip("defrag", f"borgstore {borgstore.__version__} REST client has no defrag()")
    check_quota(s, be.quota())
    check_invalid_names(s, be)
    check_server_side_validation(s, be)
    check_protocol(s, be, url)
    be.close()
    s.raises(BackendMustBeOpen, be.close, "close when closed -> BackendMustBeOpen")

    # --- create on a non-empty backend, destroy
    s.raises(BackendAlreadyExists, be.create, "create on a non-empty backend -> BackendAlreadyExists (409)")
    be.destroy()
    s.raises(BackendDoesNotExist, be.destroy, "destroy again -> BackendDoesNotExist (410)")
    be.open()
    s.raises(BackendDoesNotExist, lambda: be.load("dir1/small"), "load after destroy -> BackendDoesNotExist")
    be.close()


def check_quota(s, quota):
    s.check(isinstance(quota, dict) and set(quota) >= {"limit", "usage"}, "quota() is a dict with limit, usage",
            "{'limit': .., 'usage': ..}", quota)
    s.check(isinstance(quota["limit"], int) and isinstance(quota["usage"], int), "quota values are ints",
            "ints", quota)
    if quota["limit"] == -1:
        s.eq(quota["usage"], -1, "quota usage is -1 when the quota is off")
    else:
        s.check(0 <= quota["usage"], "quota usage >= 0 when a quota is set", ">= 0", quota)


def check_directories(s, be):
    be.mkdir("dir1")
    be.mkdir("dir1")  # exists already: fine
    s.check(True, "mkdir of an existing directory succeeds")
    be.mkdir("dir2/sub/deeper")  # missing parents are created
    for name in ("dir1", "dir2", "dir2/sub", "dir2/sub/deeper"):
        info = be.info(name)
        s.check(info.exists and info.directory, f"info({name!r}) after mkdir: existing directory", "dir", info)
    be.rmdir("dir2/sub/deeper")
    s.eq(be.info("dir2/sub/deeper").exists, False, "rmdir removes the directory")
    s.raises(ObjectNotFound, lambda: be.rmdir("dir2/sub/deeper"), "rmdir of a missing directory -> ObjectNotFound")
    be.store("dir2/sub/item", b"x")
    # reference server: OSError (directory not empty) -> 500; the client raises some error.
    s.raises(Exception, lambda: be.rmdir("dir2/sub"), "rmdir of a non-empty directory fails")
    s.eq(be.load("dir2/sub/item"), b"x", "rmdir of a non-empty directory leaves its contents")


def check_store_load(s, be, has_mtime):
    rng = random.Random(0xB0B6)
    values = {
        "dir1/empty": b"",
        "dir1/small": b"hello, borgstore! 0123456789",
        "dir1/big": rng.randbytes(5 * MiB + 12345),
    }
    for name, value in values.items():
        be.store(name, value)
        s.eq(be.load(name), value, f"load({name!r}) returns what was stored")
        info = be.info(name)
        s.check(info.exists and not info.directory and info.size == len(value),
                f"info({name!r}) after store", f"exists, file, size {len(value)}", info)
        if has_mtime:
            s.check(info.mtime > 0, f"info({name!r}).mtime > 0", "> 0", info.mtime)
    # overwrite
    be.store("dir1/over", b"first value, quite long")
    be.store("dir1/over", b"second")
    s.eq(be.load("dir1/over"), b"second", "store overwrites an existing item")
    s.eq(be.info("dir1/over").size, 6, "info size after overwrite")
    # store into directories that do not exist yet
    be.store("newdir/a/b/item", b"deep")
    s.eq(be.load("newdir/a/b/item"), b"deep", "store creates missing parent directories")
    s.eq(be.info("newdir/a").directory, True, "parent directory created by store is a directory")
    if VERSION < (0, 7, 0):
        s.skip("store of a memoryview", f"borgstore {borgstore.__version__} only stores bytes")
    elif be.command is not None:
        # client bug in 0.7.0: StdioSession.request refuses a memoryview body
        # ("unsupported body type: memoryview"), only the http(s) transport sends it.
        s.skip("store of a memoryview", "the 0.7.0 stdio transport (rest://) cannot send a memoryview body")
    else:
        # 0.7.0: store accepts a memoryview (validate_value); 0.5.5 only takes bytes
        buf = bytearray(b"0123456789abcdef")
        be.store("dir1/fromview", memoryview(buf)[4:12])
        s.eq(be.load("dir1/fromview"), b"456789ab", "store of a memoryview slice (0.7.0, http)")
        be.delete("dir1/fromview")
    # missing items
    s.raises(ObjectNotFound, lambda: be.load("dir1/missing"), "load of a missing item -> ObjectNotFound")
    s.raises(ObjectNotFound, lambda: be.load("nodir/missing"), "load in a missing directory -> ObjectNotFound")
    s.raises(ObjectNotFound, lambda: be.load("dir1/small/below"), "load below a file -> ObjectNotFound")
    return values


def check_ranges(s, be, values):
    small, big = values["dir1/small"], values["dir1/big"]
    cases = [
        ("dir1/small", small, dict(offset=7), small[7:]),
        ("dir1/small", small, dict(size=5), small[:5]),
        ("dir1/small", small, dict(offset=7, size=5), small[7:12]),
        ("dir1/small", small, dict(offset=0, size=len(small)), small),
        ("dir1/small", small, dict(offset=-5), small[-5:]),
        ("dir1/small", small, dict(offset=-len(small)), small),
        # negative offset with size: the client asks for the tail (bytes=-N) and cuts locally ...
        ("dir1/small", small, dict(offset=-9, size=4), small[-9:-5]),
        # ... a range reaching past the end is cut short (no error from load, unlike gather)
        ("dir1/small", small, dict(offset=20, size=100), small[20:]),
        # reference server: an offset at the end gives an empty 206 response, no error
        ("dir1/small", small, dict(offset=len(small)), b""),
        ("dir1/big", big, dict(offset=1_000_000, size=100_000), big[1_000_000:1_100_000]),
        ("dir1/big", big, dict(offset=4 * MiB), big[4 * MiB:]),
        ("dir1/big", big, dict(offset=-4096), big[-4096:]),
        ("dir1/big", big, dict(offset=-1000, size=10), big[-1000:-990]),
        # far from the end: the client first asks info() for the size, then sends bytes=a-b
        ("dir1/big", big, dict(offset=-100_000, size=300), big[-100_000:-99_700]),
        ("dir1/big", big, dict(offset=len(big) - 1, size=1), big[-1:]),
    ]
    for name, _, kwargs, expected in cases:
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        s.eq(be.load(name, **kwargs), expected, f"load({name!r}, {args})")


def check_info_and_list(s, be, values, has_mtime):
    missing = be.info("dir1/missing")
    s.check(not missing.exists and missing.size == 0, "info of a missing item: exists False", "not exists", missing)
    s.eq(be.info("nodir/missing").exists, False, "info in a missing directory: exists False")
    s.eq(be.info("dir1/small/below").exists, False, "info below a file: exists False")
    # one level, sorted (code point order), directories flagged
    be.mkdir("dir1/sub")
    be.store("dir1/sub/inner", b"inner")
    for name in ("dir1/b-1", "dir1/b.2", "dir1/b0", "dir1/b_3", "dir1/a"):
        be.store(name, name.encode())
    listed = list(be.list("dir1"))
    names = [i.name for i in listed]
    expected = sorted(["a", "b-1", "b.2", "b0", "b_3", "big", "empty", "over", "small", "sub"])
    s.eq(names, expected, "list('dir1'): one level, sorted names")
    by_name = {i.name: i for i in listed}
    s.eq(by_name["sub"].directory, True, "list flags a subdirectory as directory")
    for name in ("big", "empty", "small"):
        info = by_name[name]
        s.check(info.exists and not info.directory and info.size == len(values[f"dir1/{name}"]),
                f"list entry {name!r}: file with the right size", len(values[f"dir1/{name}"]), info)
        if has_mtime:
            s.check(info.mtime > 0, f"list entry {name!r}: mtime > 0", "> 0", info.mtime)
    root = list(be.list(""))
    s.eq([i.name for i in root], ["dir1", "dir2", "newdir"], "list('') lists the top level")
    s.check(all(i.directory for i in root), "list('') flags the top-level directories", "all directories", root)
    s.eq([i.name for i in be.list("dir2/sub")], ["item"], "list of a nested directory")
    s.raises(ObjectNotFound, lambda: list(be.list("nodir")), "list of a missing directory -> ObjectNotFound")
    # reference server: NotADirectoryError -> 500; the client raises some error.
    s.raises(Exception, lambda: list(be.list("dir1/small")), "list of a file fails")


def check_delete_move(s, be):
    be.store("dir1/todelete", b"bye")
    be.delete("dir1/todelete")
    s.eq(be.info("dir1/todelete").exists, False, "delete removes the item")
    # both client versions swallow ObjectNotFound on delete/move only when retrying after a
    # reconnect; on the first attempt the server's 404 comes through as ObjectNotFound.
    s.raises(ObjectNotFound, lambda: be.delete("dir1/todelete"), "delete of a missing item -> ObjectNotFound")
    s.raises(ObjectNotFound, lambda: be.delete("nodir/x"), "delete in a missing directory -> ObjectNotFound")
    # rename
    be.store("dir1/mv-src", b"move me")
    be.move("dir1/mv-src", "dir1/mv-dst")
    s.eq(be.info("dir1/mv-src").exists, False, "move: source is gone")
    s.eq(be.load("dir1/mv-dst"), b"move me", "move: target has the content")
    # replace an existing target
    be.store("dir1/mv-other", b"replacement")
    be.move("dir1/mv-other", "dir1/mv-dst")
    s.eq(be.load("dir1/mv-dst"), b"replacement", "move replaces an existing target")
    s.eq(be.info("dir1/mv-other").exists, False, "move with replace: source is gone")
    # into a directory that does not exist yet (the .del / change_level moves of Store need this)
    be.move("dir1/mv-dst", "moved/deep/x")
    s.eq(be.load("moved/deep/x"), b"replacement", "move creates missing target directories")
    s.raises(ObjectNotFound, lambda: be.move("dir1/mv-src", "dir1/whatever"),
             "move of a missing item -> ObjectNotFound")
    s.eq(be.info("dir1/whatever").exists, False, "failed move creates no target")
    be.delete("moved/deep/x")


def check_hash(s, be, values):
    algorithms = ["sha256", "sha1", "md5", "sha512", "sha3_256", "blake2b"]
    if blake3_module is not None:
        algorithms.append("blake3")
    else:
        s.skip("hash blake3", "the blake3 package is not installed for this Python")
    for name, value in values.items():
        for algorithm in algorithms:
            s.eq(be.hash(name, algorithm), local_hash(algorithm, value), f"hash({name!r}, {algorithm!r})")
    s.eq(be.hash("dir1/small"), hashlib.sha256(values["dir1/small"]).hexdigest(), "hash default is sha256")
    s.raises(ObjectNotFound, lambda: be.hash("dir1/missing"), "hash of a missing item -> ObjectNotFound")
    s.raises(ValueError, lambda: be.hash("dir1/small", "nosuchalgo"), "hash with unknown algorithm -> ValueError (400)")


def check_gather(s, be, values):
    small, big = values["dir1/small"], values["dir1/big"]
    sources = [("dir1/small", 0, 5), ("dir1/big", -100, 100), ("dir1/small", 3, 2), ("dir1/big", 2 * MiB, 70_000)]
    expected = small[0:5] + big[-100:] + small[3:5] + big[2 * MiB : 2 * MiB + 70_000]
    s.eq(be.gather(sources), expected, "gather concatenates the ranges in order")
    s.eq(be.gather([]), b"", "gather of no ranges is empty")
    s.eq(be.gather([("dir1/small", 4, 0), ("dir1/small", 1, 1)]), small[1:2], "gather skips empty ranges")
    s.raises(ReadRangeError, lambda: be.gather([("dir1/small", 20, 100)]), "gather short read -> ReadRangeError (416)")
    s.raises(ObjectNotFound, lambda: be.gather([("dir1/missing", 0, 1)]), "gather of a missing item -> ObjectNotFound")
    s.raises(ValueError, lambda: be.gather([("dir1/small", 0, -1)]), "gather with negative size -> ValueError")


def check_defrag(s, be, values):
    small, big = values["dir1/small"], values["dir1/big"]
    sources = [["dir1/small", 0, 5], ["dir1/big", 1000, 3000], ["dir1/small", -4, 4]]
    content = small[0:5] + big[1000:4000] + small[-4:]
    s.eq(be.defrag(sources, target="dir1/defragged"), "dir1/defragged", "defrag with target returns the target")
    s.eq(be.load("dir1/defragged"), content, "defrag with target: content")
    digest = hashlib.sha256(content).hexdigest()
    name = be.defrag(sources, algorithm="sha256", namespace="data", levels=2)
    s.eq(name, nest("data/" + digest, 2), "defrag with algorithm+namespace+levels: nested content-hash name")
    s.eq(be.load(name), content, "defrag with algorithm: content")
    name = be.defrag(sources, algorithm="sha1")
    s.eq(name, hashlib.sha1(content).hexdigest(), "defrag with algorithm, no namespace, no levels")
    if blake3_module is not None:
        name = be.defrag(sources, algorithm="blake3", namespace="data")
        s.eq(name, "data/" + blake3_module.blake3(content).hexdigest(), "defrag with blake3, namespace, levels 0")
    s.raises(ReadRangeError, lambda: be.defrag([["dir1/small", 20, 100]], target="dir1/short"),
             "defrag short read -> ReadRangeError (416)")
    s.eq(be.info("dir1/short").exists, False, "failed defrag creates no target")
    s.raises(ObjectNotFound, lambda: be.defrag([["dir1/missing", 0, 1]], target="dir1/x"),
             "defrag of a missing item -> ObjectNotFound")
    s.raises(ValueError, lambda: be.defrag(sources), "defrag without target and algorithm -> ValueError (400)")
    if be.command is not None:
        # the reference server answers this 400 without reading the request body. Over TCP that
        # is harmless (error responses close the connection), but over stdio the unread body would
        # be parsed as the next request and the pipe gets out of step: start a fresh stdio session.
        be.close()
        be.open()
    s.raises(ValueError, lambda: be.defrag(sources, algorithm="nosuchalgo"),
             "defrag with unknown algorithm -> ValueError")


INVALID_NAMES = ["../x", "a/../b", "/abs", "UPPER", "a b", "a\\b", "trailing/", "x.tmp", "x.hid", "n" * 101, "\u00e4"]


def check_invalid_names(s, be):
    """The client validates names itself (before sending anything)."""
    for bad in INVALID_NAMES:
        calls = {
            "store": lambda: be.store(bad, b"x"),
            "load": lambda: be.load(bad),
            "info": lambda: be.info(bad),
            "delete": lambda: be.delete(bad),
            "mkdir": lambda: be.mkdir(bad),
            "rmdir": lambda: be.rmdir(bad),
            "hash": lambda: be.hash(bad),
            "list": lambda: list(be.list(bad)),
            "move from": lambda: be.move(bad, "dir1/ok"),
            "move to": lambda: be.move("dir1/small", bad),
        }
        for op, call in calls.items():
            s.raises(ValueError, call, f"{op} with invalid name {bad!r} -> ValueError")
    s.eq(be.load("dir1/small")[:5], b"hello", "invalid move target left the source alone")


def check_server_side_validation(s, be):
    """Names the client would refuse, sent raw: the server must answer 400 and store nothing.

    Only names that survive the URL unchanged are used: requests removes dot segments ("a/../b")
    and percent-encodes blanks and non-ASCII (the reference server does not decode them).
    """
    for bad in ["UPPER", "dir1/x.tmp", "dir1/x.hid", "n" * 101]:
        r = raw(be, "post", bad, data=b"x")
        s.eq(r.status_code, 400, f"server: POST (store) invalid name {bad!r} -> 400")
        r = raw(be, "get", bad)
        s.eq(r.status_code, 400, f"server: GET (load) invalid name {bad!r} -> 400")
        r = raw(be, "head", bad)
        s.eq(r.status_code, 400, f"server: HEAD (info) invalid name {bad!r} -> 400")
    r = raw(be, "post", "", params={"cmd": "move", "current": "dir1/small", "new": "UPPER"})
    s.eq(r.status_code, 400, "server: move to an invalid name -> 400")
    s.eq(be.info("dir1/small").exists, True, "server: rejected move left the source alone")
    names = [i.name for i in be.list("")] + [i.name for i in be.list("dir1")]
    s.check(not any(n in names for n in ("UPPER", "x.tmp", "x.hid", "n" * 101)),
            "server: nothing stored under invalid names", "none of them", names)


def check_protocol(s, be, url):
    """A few HTTP details of the reference server that the client relies on (or that are cheap to check)."""
    r = raw(be, "head", "dir1/small", headers={"Accept": "application/json"})
    s.eq(r.status_code, 406, "server: wrong Accept header -> 406")
    # store with a content hash header that does not match the body
    r = raw(be, "post", "dir1/badhash", data=b"payload", headers={"X-Content-hash-sha256": "00" * 32})
    s.eq(r.status_code, 422, "server: POST with wrong X-Content-hash-sha256 -> 422")
    s.eq(be.info("dir1/badhash").exists, False, "server: nothing stored after a hash mismatch")
    r = raw(be, "post", "dir1/goodhash", data=b"payload",
            headers={"X-Content-hash-sha256": hashlib.sha256(b"payload").hexdigest()})
    s.eq(r.status_code, 200, "server: POST with matching X-Content-hash-sha256 -> 200")
    r = raw(be, "post", "dir1/nohash", data=b"payload")
    s.eq(r.status_code, 200, "server: POST without a content hash header -> 200")
    s.eq(be.load("dir1/nohash"), b"payload", "server: POST without a content hash header stores the body")
    r = raw(be, "get", "dir1/small")
    s.eq(r.status_code, 200, "server: GET without Range -> 200")
    s.check("no-store" in r.headers.get("Cache-Control", ""), "server: success responses carry Cache-Control no-store",
            "no-store", r.headers.get("Cache-Control"))
    r = raw(be, "get", "dir1/small", headers={"Range": "bytes=0-4"})
    s.eq((r.status_code, r.content), (206, b"hello"), "server: GET with Range bytes=0-4 -> 206 with 5 bytes")
    r = raw(be, "get", "dir1/")
    s.eq(r.status_code, 200, "server: GET NAME/ (list) -> 200")
    s.check(isinstance(json.loads(r.content), list), "server: list answers a JSON list", "list", short(r.content))
    s.eq(raw(be, "post", "").status_code, 400, "server: POST / without cmd -> 400")
    s.eq(raw(be, "delete", "").status_code, 400, "server: DELETE / without cmd -> 400")
    r = raw(be, "post", "", params={"cmd": "move", "current": "dir1/small"})
    s.eq(r.status_code, 400, "server: move without new= -> 400")
    r = raw(be, "post", "", params={"cmd": "quota"})
    s.eq((r.status_code, json.loads(r.content)), (200, be.quota()), "server: quota answers JSON")
    if is_http_url(url) and be.auth is not None:
        import requests

        r = requests.head(be._url("dir1/small"), headers={"Accept": ACCEPT}, timeout=30)
        s.eq(r.status_code, 401, "server: no Authorization -> 401")
        s.check(r.headers.get("WWW-Authenticate", "").startswith("Basic"), "server: 401 has WWW-Authenticate: Basic",
                "Basic realm=...", r.headers.get("WWW-Authenticate"))
        r = requests.head(be._url("dir1/small"), headers={"Accept": ACCEPT}, auth=(be.auth.username, "wrong"),
                          timeout=30)
        s.eq(r.status_code, 401, "server: wrong password -> 401")
    else:
        s.skip("HTTP Basic auth checks", "URL has no credentials (or is not http)")


# ---------------------------------------------------------------------------------------------
# mode: store


def key(i, salt=""):
    return hashlib.sha256(f"{salt}{i}".encode()).hexdigest()


def clustered_key(i):
    """A hex key whose first 4 digits come from a small set, so that many keys share each
    nesting directory: Store.list does one request per directory, keep their number small."""
    return f"{i % 4:02x}{i % 3:02x}" + key(i)[4:]


def value_for(i):
    return bytes((i * 13 + j) % 256 for j in range((i * 37) % 3000))


def store_mode(s, url):
    store = Store(url, config=STORE_CONFIG)
    be = store.backend
    store.create()
    n = 200
    # mostly clustered keys (12 leaf directories), a few spread ones (their own directories)
    keys = [clustered_key(i) for i in range(n - 10)] + [key(i) for i in range(n - 10, n)]
    with store:
        store.store("config/main", b"[main]\nversion = 2\n")
        s.eq(store.load("config/main"), b"[main]\nversion = 2\n", "Store: load of a level-0 item")
        s.eq(be.info("config/main").exists, True, "Store: level-0 item is not nested")
        for i, k in enumerate(keys):
            store.store(f"data/{k}", value_for(i))
        s.eq(be.info(nest(f"data/{keys[0]}", 2)).exists, True, "Store: data item is nested at level 2")
        s.eq(be.info(f"data/{keys[0]}").exists, False, "Store: data item is not stored flat")
        listed = list(store.list("data"))
        s.eq([i.name for i in listed], sorted(keys), f"Store: list('data') gives all {n} keys, sorted")
        s.eq([i.size for i in listed], [len(value_for(keys.index(i.name))) for i in listed],
             "Store: list('data') sizes")
        for i in (0, 1, 7, 199):
            s.eq(store.load(f"data/{keys[i]}"), value_for(i), f"Store: load data key #{i}")
            s.eq(store.info(f"data/{keys[i]}").size, len(value_for(i)), f"Store: info data key #{i}")

        # ranged loads on a bigger item
        big = random.Random(7).randbytes(3 * MiB + 17)
        big_key = key("big")
        store.store(f"data/{big_key}", big)
        for kwargs, expected in [
            (dict(offset=1000), big[1000:]),
            (dict(size=10), big[:10]),
            (dict(offset=MiB, size=4096), big[MiB:MiB + 4096]),
            (dict(offset=-4096), big[-4096:]),
            (dict(offset=-2000, size=100), big[-2000:-1900]),
            (dict(offset=-200_000, size=100), big[-200_000:-199_900]),
        ]:
            args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            s.eq(store.load(f"data/{big_key}", **kwargs), expected, f"Store: load(big, {args})")
        s.eq(store.hash(f"data/{big_key}"), hashlib.sha256(big).hexdigest(), "Store: hash sha256")
        if blake3_module is not None:
            s.eq(store.hash(f"data/{big_key}", "blake3"), blake3_module.blake3(big).hexdigest(), "Store: hash blake3")
        s.eq(store.hash("config/main", "md5"), hashlib.md5(b"[main]\nversion = 2\n").hexdigest(), "Store: hash md5")

        # soft delete / undelete
        soft = [keys[i] for i in (3, 50, 195)]
        for k in soft:
            store.move(f"data/{k}", delete=True)
        s.eq(be.info(nest(f"data/{soft[0]}", 2) + ".del").exists, True, "Store: soft delete renames to .del")
        live = sorted(set(keys) - set(soft)) + [big_key]
        s.eq([i.name for i in store.list("data")], sorted(live), "Store: list('data') hides soft-deleted items")
        s.eq([i.name for i in store.list("data", deleted=True)], sorted(soft),
             "Store: list('data', deleted=True) gives only soft-deleted items")
        s.raises(ObjectNotFound, lambda: store.load(f"data/{soft[0]}"),
                 "Store: load of a soft-deleted item -> ObjectNotFound")
        s.eq(store.load(f"data/{soft[0]}", deleted=True), value_for(3), "Store: load(deleted=True)")
        s.eq(store.info(f"data/{soft[0]}").exists, False, "Store: info of a soft-deleted item: exists False")
        s.eq(store.info(f"data/{soft[0]}", deleted=True).exists, True, "Store: info(deleted=True)")
        s.eq(store.hash(f"data/{soft[0]}", deleted=True), hashlib.sha256(value_for(3)).hexdigest(),
             "Store: hash(deleted=True)")
        store.move(f"data/{soft[0]}", undelete=True)
        s.eq(store.load(f"data/{soft[0]}"), value_for(3), "Store: undelete brings the item back")
        s.eq([i.name for i in store.list("data", deleted=True)], sorted(soft[1:]), "Store: list deleted after undelete")
        store.delete(f"data/{soft[1]}", deleted=True)
        s.eq([i.name for i in store.list("data", deleted=True)], [soft[2]], "Store: hard delete of a soft-deleted item")
        store.delete(f"data/{keys[10]}")
        s.raises(ObjectNotFound, lambda: store.load(f"data/{keys[10]}"), "Store: load after delete -> ObjectNotFound")
        s.raises(ObjectNotFound, lambda: store.delete(f"data/{keys[10]}"), "Store: delete again -> ObjectNotFound")
        s.raises(ObjectNotFound, lambda: store.move(f"data/{keys[10]}", delete=True),
                 "Store: soft delete of a missing item -> ObjectNotFound")

        # generic rename in the level-0 namespace
        store.move("config/main", "config/renamed")
        s.eq(store.load("config/renamed"), b"[main]\nversion = 2\n", "Store: rename")
        s.eq(store.info("config/main").exists, False, "Store: rename source gone")
        s.eq([i.name for i in store.list("config")], ["renamed"], "Store: list('config')")

        store_gather_defrag(s, store, keys)
        check_quota(s, store.quota())

    check_change_level(s, url, keys[20], value_for(20), keys[30], value_for(30))

    store.destroy()
    s.raises(BackendDoesNotExist, store.destroy, "Store: destroy again -> BackendDoesNotExist")


def store_gather_defrag(s, store, keys):
    v5, v6 = value_for(5), value_for(6)
    sources = [(keys[5], 0, 10), (keys[6], 100, 50), (keys[5], -20, 20)]
    content = v5[0:10] + v6[100:150] + v5[-20:]
    if hasattr(store, "gather"):  # Store.gather is new in 0.7.0
        s.eq(store.gather(sources, namespace="data"), content, "Store: gather")
    else:
        s.skip("Store.gather", f"borgstore {borgstore.__version__} Store has no gather()")
    name = store.defrag(sources, algorithm="sha256", namespace="data")
    s.eq(name, hashlib.sha256(content).hexdigest(), "Store: defrag returns the content hash name")
    s.eq(store.load(f"data/{name}"), content, "Store: defrag content")
    s.eq(store.backend.info(nest(f"data/{name}", 2)).exists, True, "Store: defrag target is nested at level 2")
    name = store.defrag(sources, target=keys[0][:-4] + "beef", namespace="data")
    s.eq(name, keys[0][:-4] + "beef", "Store: defrag with target returns it")
    s.eq(store.load(f"data/{name}"), content, "Store: defrag with target: content")


def check_change_level(s, url, live_key, live_value, del_key, del_value):
    """Move items between nesting levels with Stores configured for a level migration."""
    down = Store(url, config={"data/": {"levels": [2, 1]}, "": {"levels": [0]}})
    with down:
        down.move(f"data/{live_key}", change_level=True)
        s.eq(down.backend.info(nest(f"data/{live_key}", 1)).exists, True, "Store: change_level to level 1")
        s.eq(down.backend.info(nest(f"data/{live_key}", 2)).exists, False, "Store: change_level left level 2")
        s.eq(down.load(f"data/{live_key}"), live_value, "Store: load after change_level (found at level 1)")
        down.move(f"data/{del_key}", delete=True)
        down.move(f"data/{del_key}", change_level=True, deleted=True)
        s.eq(down.backend.info(nest(f"data/{del_key}", 1) + ".del").exists, True,
             "Store: change_level of a soft-deleted item")
        s.eq(down.load(f"data/{del_key}", deleted=True), del_value, "Store: load(deleted) after change_level")
    up = Store(url, config={"data/": {"levels": [1, 2]}, "": {"levels": [0]}})
    with up:
        up.move(f"data/{live_key}", change_level=True)
        up.move(f"data/{del_key}", change_level=True, deleted=True)
        up.move(f"data/{del_key}", undelete=True)
    plain = Store(url, config=STORE_CONFIG)
    with plain:
        s.eq(plain.load(f"data/{live_key}"), live_value, "Store: change_level back to level 2")
        s.eq(plain.load(f"data/{del_key}"), del_value, "Store: change_level back + undelete")


# ---------------------------------------------------------------------------------------------
# mode: roundtrip


def roundtrip_mode(s, url):
    store = Store(url, config=STORE_CONFIG)
    be = store.backend
    be.open()
    try:
        be.info("")
        existed = True
    except BackendDoesNotExist:
        existed = False
    be.close()
    if not existed:
        store.create()
    print(f"roundtrip: store {'existed' if existed else 'was created'}", flush=True)
    salt = random.Random().randbytes(8).hex()
    rng = random.Random(salt)
    items = {key(i, salt): v for i, v in enumerate([b"", b"small value", rng.randbytes(200 * 1024)])}
    with store:
        for k, v in items.items():
            store.store(f"data/{k}", v)
        for k, v in items.items():
            s.eq(store.load(f"data/{k}"), v, f"roundtrip: load data/{k[:12]}..")
            s.eq(store.info(f"data/{k}").size, len(v), "roundtrip: info size")
            s.eq(store.hash(f"data/{k}"), hashlib.sha256(v).hexdigest(), "roundtrip: hash")
        k_big = list(items)[2]
        s.eq(store.load(f"data/{k_big}", offset=1000, size=5000), items[k_big][1000:6000], "roundtrip: ranged load")
        s.eq(store.load(f"data/{k_big}", offset=-300), items[k_big][-300:], "roundtrip: tail load")
        listed = {i.name: i.size for i in store.list("data")}
        for k, v in items.items():
            s.eq(listed.get(k), len(v), f"roundtrip: list('data') has data/{k[:12]}..")
        k0 = list(items)[0]
        store.move(f"data/{k0}", delete=True)
        deleted_names = {i.name for i in store.list("data", deleted=True)}
        s.check(k0 in deleted_names, "roundtrip: soft-deleted item is listed as deleted", k0, "not listed")
        store.move(f"data/{k0}", undelete=True)
        s.eq(store.load(f"data/{k0}"), items[k0], "roundtrip: undelete")
        for k in items:
            store.delete(f"data/{k}")
        left = {i.name for i in store.list("data")} & set(items)
        s.eq(left, set(), "roundtrip: deleted items are gone from list")
        s.raises(ObjectNotFound, lambda: store.load(f"data/{k0}"), "roundtrip: load after delete -> ObjectNotFound")
        check_quota(s, store.quota())


# ---------------------------------------------------------------------------------------------


MODES = {"backend": backend_mode, "store": store_mode, "roundtrip": roundtrip_mode}


def main(argv):
    if len(argv) != 3 or argv[1] not in MODES:
        print(__doc__, file=sys.stderr)
        print(f"usage: {argv[0]} {{{'|'.join(MODES)}}} URL", file=sys.stderr)
        return 2
    mode, url = argv[1], argv[2]
    print(f"rest_client_suite: mode={mode} borgstore={borgstore.__version__} python={sys.version.split()[0]}",
          flush=True)
    s = Suite(mode)
    try:
        command = getattr(get_backend(url), "command", None)
        if command:
            print(f"stdio command: {' '.join(command)}", flush=True)
        MODES[mode](s, url)
    except CheckFailed as exc:
        print(f"FAIL {mode}: {exc}", flush=True)
        print(f"(after {s.count - 1} passed checks)", flush=True)
        return 1
    except Exception as exc:
        traceback.print_exc()
        print(f"FAIL {mode}: unexpected {type(exc).__name__}: {exc} (after {s.count} passed checks)", flush=True)
        return 1
    print(f"OK {mode} {s.count} checks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
