#!/usr/bin/env python3
"""Python borgstore 0.7.0 in-process on the bench binary's workload; prints JSON ops/s.

    bench_engine.py DIR SIZE COUNT [PASSES]

store, load, info, list, delete of COUNT values of SIZE bytes in `data/` at nesting
level 2 on posixfs, the same as `engine_run` in tests/src/bin/bench/ipc.rs; load and
info go over the keys PASSES times (default 1).
"""

import hashlib
import json
import os
import sys
import time

from borgstore.store import Store


def main(path, size, count, passes=1):
    store = Store(url="file://" + path, config={"data/": {"levels": [2]}, "": {"levels": [0]}})
    store.create()
    value = b"\x5a" * size
    keys = ["data/" + hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(count)]
    rates = {}
    with store:
        os.sync()  # as the other phases: no writeback left over from earlier ones
        t = time.perf_counter()
        for k in keys:
            store.store(k, value)
        rates["store"] = count / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(passes):
            for k in keys:
                assert len(store.load(k)) == size
        rates["load"] = count * passes / (time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(passes):
            for k in keys:
                store.info(k)
        rates["info"] = count * passes / (time.perf_counter() - t)
        t = time.perf_counter()
        assert len(list(store.list("data"))) == count
        rates["list"] = count / (time.perf_counter() - t)
        t = time.perf_counter()
        for k in keys:
            store.delete(k)
        rates["delete"] = count / (time.perf_counter() - t)
    json.dump(rates, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 1)
