#!/usr/bin/env python3
"""The Python side of the on-disk interop tests (tests/tests/interop_python.rs).

Runs the real borgstore (0.7.0, from the venv tests/run creates) on a posixfs store
and either writes the shared scenario, prints a JSON dump of what it sees, or
undeletes one item. The Rust test does the same with our engine and compares.

    interop.py write    STORE_DIR QUOTA
    interop.py dump     STORE_DIR QUOTA
    interop.py undelete STORE_DIR QUOTA NAME

The scenario must match `scenario()` in interop_python.rs item for item.
"""

import hashlib
import json
import os
import sys

from borgstore.backends.posixfs import PosixFS
from borgstore.store import Store

CONFIG = {"config/": {"levels": [0]}, "data/": {"levels": [2]}, "": {"levels": [0]}}
ITEMS = 20
SOFT_DELETED = (3, 7, 11)
HARD_DELETED = (15,)


def key(i):
    return "data/" + hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def value(i):
    # sizes 0, 37, 74, ... and contents that differ per item and per position
    return bytes((i * 7 + j) % 251 for j in range(i * 37))


def open_store(path, quota):
    return Store(backend=PosixFS(path, quota=quota), config=CONFIG)


def write(store):
    store.create()
    with store:
        store.store("config/main", b"interop config\n")
        for i in range(ITEMS):
            store.store(key(i), value(i))
        for i in SOFT_DELETED:
            store.move(key(i), delete=True)
        for i in HARD_DELETED:
            store.delete(key(i))


def dump(store, path):
    out = {"list": {}, "deleted": {}, "loads": {}, "tails": {}, "hashes": {}}
    with store:
        for ns in ("config", "data"):
            for deleted in (False, True):
                infos = [[i.name, i.size] for i in store.list(ns, deleted=deleted)]
                out["deleted" if deleted else "list"][ns] = infos
                for name, size in infos:
                    full = f"{ns}/{name}"
                    data = store.load(full, deleted=deleted)
                    tag = full + ("#deleted" if deleted else "")
                    out["loads"][tag] = hashlib.sha256(data).hexdigest()
                    out["tails"][tag] = store.load(full, offset=-min(5, size), deleted=deleted).hex()
                    out["hashes"][tag] = {
                        "sha256": store.hash(full, "sha256", deleted=deleted),
                        "blake3": store.hash(full, "blake3", deleted=deleted),
                    }
        out["quota"] = store.quota()
    tree = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), path)
            if rel != "quota.hid":
                tree.append(rel)
    out["tree"] = sorted(tree)
    with open(os.path.join(path, "quota.hid")) as f:
        out["quota_hid"] = int(f.read().strip())
    return out


def main(argv):
    cmd, path, quota = argv[1], argv[2], int(argv[3])
    store = open_store(path, quota)
    if cmd == "write":
        write(store)
    elif cmd == "dump":
        json.dump(dump(store, path), sys.stdout, sort_keys=True)
    elif cmd == "undelete":
        with store:
            store.move(argv[4], undelete=True)
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
