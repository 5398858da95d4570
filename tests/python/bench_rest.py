#!/usr/bin/env python3
"""The Python borgstore REST client against a REST server; prints JSON ops/s.

    bench_rest.py URL SIZE COUNT

Creates the store at URL (it must not exist), then store, load, info and list of
COUNT values of SIZE bytes in `data/` (backend level, one directory), then destroys it.
Used by the `bench` binary (tests/src/bin/bench/rest.rs) on our server and on Python's.
"""

import json
import sys
import time

from borgstore.store import get_backend


def main(url, size, count):
    be = get_backend(url)
    be.create()
    value = b"\x5a" * size
    names = [f"data/{i:064x}" for i in range(count)]
    rates = {}
    with be:
        be.mkdir("data")
        t = time.perf_counter()
        for n in names:
            be.store(n, value)
        rates["store"] = count / (time.perf_counter() - t)
        t = time.perf_counter()
        for n in names:
            assert len(be.load(n)) == size
        rates["load"] = count / (time.perf_counter() - t)
        t = time.perf_counter()
        for n in names:
            assert be.info(n).exists
        rates["info"] = count / (time.perf_counter() - t)
        rounds = 10
        t = time.perf_counter()
        for _ in range(rounds):
            assert len(list(be.list("data"))) == count
        rates["list"] = rounds / (time.perf_counter() - t)
    be.destroy()
    json.dump(rates, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
