#!/usr/bin/env python3
"""The Python side of the sftp interop test (tests/tests/sftp.rs).

Runs the real borgstore 0.7.0 Store with its sftp backend (paramiko) on an sftp:// URL
served by the test's own sshd. paramiko finds the client key and the server's host key
through $HOME/.ssh (config and known_hosts), which the test points at its fixture.

    sftp_interop.py write    URL
    sftp_interop.py dump     URL
    sftp_interop.py undelete URL NAME

The scenario must match `rust_write()` in sftp.rs item for item.
"""

import hashlib
import json
import sys

from borgstore.store import Store

CONFIG = {"config/": {"levels": [0]}, "data/": {"levels": [2]}, "": {"levels": [0]}}
ITEMS = 20
SOFT_DELETED = (3, 7, 11)
HARD_DELETED = (15,)


def key(i):
    return "data/" + hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def value(i):
    return bytes((i * 7 + j) % 251 for j in range(i * 37))


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


def dump(store):
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
    return out


def main(argv):
    cmd, url = argv[1], argv[2]
    store = Store(url=url, config=CONFIG)
    if cmd == "write":
        write(store)
    elif cmd == "dump":
        json.dump(dump(store), sys.stdout, sort_keys=True)
    elif cmd == "undelete":
        with store:
            store.move(argv[3], undelete=True)
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
