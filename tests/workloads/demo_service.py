"""A small service with everyday leaks, for `cargo xtask demo`.

Every "request": parses a payload, does healthy work that frees what it allocates, and
  - appends the request to a global history list that nobody trims (leak),
  - memoizes a result in an unbounded dict cache keyed by a unique id (leak),
  - every 10th request opens an audit file and forgets to close it (descriptor leak),
  - every 25th request creates a UDP socket for a metric and never closes it (descriptor leak).
"""
import json
import os
import socket
import tempfile
import time

HISTORY = []
RESULT_CACHE = {}
_forgotten = []
AUDIT_DIR = tempfile.mkdtemp(prefix="tracer-demo-")


def handle(n):
    payload = json.dumps({"id": n, "items": ["item-%d" % i for i in range(20)]})
    req = json.loads(payload)
    HISTORY.append(payload)  # leak: history only grows
    RESULT_CACHE["req-%d" % n] = [len(x) for x in req["items"]]  # leak: unbounded cache
    total = sum(len(s) for s in req["items"])  # healthy: temporaries
    if n % 10 == 0:
        f = open(os.path.join(AUDIT_DIR, "audit-%d.log" % n), "a")  # leak: never closed
        f.write("request %d\n" % n)
        _forgotten.append(f)
    if n % 25 == 0:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # leak: never closed
        _forgotten.append(s)
    with open(os.path.join(AUDIT_DIR, "ok.log"), "a") as ok:  # healthy: closed
        ok.write("%d\n" % total)


def main():
    n = 0
    while True:
        n += 1
        handle(n)
        time.sleep(0.02)


if __name__ == "__main__":
    main()
