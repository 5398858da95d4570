#!/usr/bin/env python3
"""The Python side of the on-disk interop tests (tests/tests/interop_python.rs).

Runs the real borgstore (0.7.0, from the venv tests/run creates) on a posixfs store
with a quota and either writes the shared scenario (scenario.py), prints a JSON dump
of what it sees (plus the file tree and quota), or undeletes one item.

    interop.py write    STORE_DIR QUOTA
    interop.py dump     STORE_DIR QUOTA
    interop.py undelete STORE_DIR QUOTA NAME
"""

import json
import os
import sys

from borgstore.backends.posixfs import PosixFS
from borgstore.store import Store

import scenario


def main(argv):
    cmd, path, quota = argv[1], argv[2], int(argv[3])
    store = Store(backend=PosixFS(path, quota=quota), config=scenario.CONFIG)
    if cmd == "write":
        scenario.write(store)
    elif cmd == "dump":
        out = scenario.dump(store)
        with store:
            out["quota"] = store.quota()
        tree = []
        for root, _dirs, files in os.walk(path):
            tree.extend(os.path.relpath(os.path.join(root, f), path) for f in files)
        out["tree"] = sorted(t for t in tree if t != "quota.hid")
        with open(os.path.join(path, "quota.hid")) as f:
            out["quota_hid"] = int(f.read().strip())
        json.dump(out, sys.stdout, sort_keys=True)
    elif cmd == "undelete":
        scenario.undelete(store, argv[4])
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
