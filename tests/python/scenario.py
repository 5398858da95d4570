"""The interop scenario and dump shared by interop.py, sftp_interop.py and s3_interop.py;
the Python half of tests/src/scenario.rs, which must match it item for item."""

import hashlib

CONFIG = {"config/": {"levels": [0]}, "data/": {"levels": [2]}, "": {"levels": [0]}}
ITEMS = 20
SOFT_DELETED = (3, 7, 11)
HARD_DELETED = (15,)
CONFIG_VALUE = b"interop config\n"


def key(i):
    return "data/" + hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def value(i):
    # sizes 0, 37, 74, ... and contents that differ per item and per position
    return bytes((i * 7 + j) % 251 for j in range(i * 37))


def write(store):
    store.create()
    with store:
        store.store("config/main", CONFIG_VALUE)
        for i in range(ITEMS):
            store.store(key(i), value(i))
        for i in SOFT_DELETED:
            store.move(key(i), delete=True)
        for i in HARD_DELETED:
            store.delete(key(i))


def undelete(store, name):
    with store:
        store.move(name, undelete=True)


def dump(store, ranges=False):
    """What the store holds; with ranges, also 7 bytes from a third into each item."""
    out = {"list": {}, "deleted": {}, "loads": {}, "tails": {}, "hashes": {}}
    if ranges:
        out["ranges"] = {}
    with store:
        for ns in ("config", "data"):
            for deleted in (False, True):
                infos = [[i.name, i.size] for i in store.list(ns, deleted=deleted)]
                out["deleted" if deleted else "list"][ns] = infos
                for name, size in infos:
                    full = f"{ns}/{name}"
                    tag = full + ("#deleted" if deleted else "")
                    out["loads"][tag] = hashlib.sha256(store.load(full, deleted=deleted)).hexdigest()
                    out["tails"][tag] = store.load(full, offset=-min(5, size), deleted=deleted).hex()
                    if ranges:
                        # (a range of an empty item is unsatisfiable on S3: InvalidRange)
                        part = store.load(full, offset=size // 3, size=7, deleted=deleted) if size else b""
                        out["ranges"][tag] = part.hex()
                    out["hashes"][tag] = {
                        "sha256": store.hash(full, "sha256", deleted=deleted),
                        "blake3": store.hash(full, "blake3", deleted=deleted),
                    }
    return out
