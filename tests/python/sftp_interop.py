#!/usr/bin/env python3
"""The Python side of the sftp interop test (tests/tests/sftp.rs).

Runs the real borgstore 0.7.0 Store with its sftp backend (paramiko) on an sftp:// URL
served by the test's own sshd, with the shared scenario (scenario.py). paramiko finds
the client key and the server's host key through $HOME/.ssh (config and known_hosts),
which the test points at its fixture.

    sftp_interop.py write    URL
    sftp_interop.py dump     URL
    sftp_interop.py undelete URL NAME
"""

import json
import sys

from borgstore.store import Store

import scenario


def main(argv):
    cmd, url = argv[1], argv[2]
    store = Store(url=url, config=scenario.CONFIG)
    if cmd == "write":
        scenario.write(store)
    elif cmd == "dump":
        json.dump(scenario.dump(store), sys.stdout, sort_keys=True)
    elif cmd == "undelete":
        scenario.undelete(store, argv[3])
    else:
        sys.exit(f"unknown command {cmd!r}")


if __name__ == "__main__":
    main(sys.argv)
