#!/usr/bin/env python3
"""The Python side of the S3 interop tests (tests/tests/s3.rs).

Runs the real borgstore (0.7.0, from the venv tests/run creates) on an s3: URL (a moto
server on loopback) and writes the shared scenario, prints a JSON dump of what it sees,
undeletes one item, lists the raw objects, or works on directories. The Rust test does
the same with our engine and compares.

    s3_interop.py write    URL
    s3_interop.py dump     URL
    s3_interop.py undelete URL NAME
    s3_interop.py keys     URL          raw objects below the store prefix: [key, size, sha256]
    s3_interop.py mkdir    URL NAME     backend-level mkdir
    s3_interop.py rmdir    URL NAME     backend-level rmdir
    s3_interop.py dirinfo  URL NAME...  backend-level info and list of each NAME
    s3_interop.py put      URL NAME FILE     backend-level store of FILE's bytes
    s3_interop.py put-parts URL NAME FILE    FILE's bytes as a boto3 multipart upload (5 MiB parts)
    s3_interop.py get      URL NAME FILE [OFFSET SIZE]  backend-level load into FILE

The scenario is scenario.py's, shared with the other interop tests.
"""

import hashlib
import json
import sys

from borgstore.backends.s3 import get_s3_backend
from borgstore.store import Store

import scenario

def dump(store):
    out = scenario.dump(store, ranges=True)
    with store:
        out["root"] = [[i.name, i.directory] for i in store.backend.list("")]
    return out


def keys(url):
    backend = get_s3_backend(url)
    out = []
    paginator = backend.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=backend.bucket, Prefix=backend.base_path):
        for obj in page.get("Contents", []):
            body = backend.s3.get_object(Bucket=backend.bucket, Key=obj["Key"])["Body"].read()
            out.append([obj["Key"][len(backend.base_path) :], obj["Size"], hashlib.sha256(body).hexdigest()])
    return sorted(out)


def dirinfo(url, names):
    backend = get_s3_backend(url)
    out = {}
    with backend:
        for name in names:
            info = backend.info(name)
            try:
                listing = [[i.name, i.directory] for i in backend.list(name)]
            except Exception as e:  # noqa: BLE001 - the kind is what we compare
                listing = type(e).__name__
            out[name] = {"exists": info.exists, "directory": info.directory, "list": listing}
    return out


def main(argv):
    cmd, url = argv[1], argv[2]
    if cmd == "write":
        scenario.write(Store(url=url, config=scenario.CONFIG))
    elif cmd == "dump":
        json.dump(dump(Store(url=url, config=scenario.CONFIG)), sys.stdout, sort_keys=True)
    elif cmd == "undelete":
        scenario.undelete(Store(url=url, config=scenario.CONFIG), argv[3])
    elif cmd == "keys":
        json.dump(keys(url), sys.stdout)
    elif cmd in ("mkdir", "rmdir"):
        backend = get_s3_backend(url)
        with backend:
            getattr(backend, cmd)(argv[3])
    elif cmd == "dirinfo":
        json.dump(dirinfo(url, argv[3:]), sys.stdout, sort_keys=True)
    elif cmd == "put":
        backend = get_s3_backend(url)
        with backend, open(argv[4], "rb") as f:
            backend.store(argv[3], f.read())
    elif cmd == "put-parts":
        # Not how borgstore stores (it sends one PUT); another S3 client's multipart object.
        from boto3.s3.transfer import TransferConfig

        backend = get_s3_backend(url)
        mib = 1024 * 1024
        config = TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib)
        backend.s3.upload_file(argv[4], backend.bucket, backend.base_path + argv[3], Config=config)
    elif cmd == "get":
        backend = get_s3_backend(url)
        offset, size = (int(argv[5]), int(argv[6])) if len(argv) > 6 else (0, None)
        with backend, open(argv[4], "wb") as f:
            f.write(backend.load(argv[3], offset=offset, size=size))
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
