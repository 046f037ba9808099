"""A service-like loop for leak verdicts: one growing leak (a request log that is never trimmed),
a cache that fills and then stays flat, reference cycles that the gc collects, transient work, and
descriptors that are never closed. A maintenance step runs a full collection every few seconds,
as schedulers and workers do between jobs.

Lines marked `# LEAK:<name>` leak; `# CACHE` fills then plateaus; `# CYCLE` and `# CHURN` are not
leaks. Runs until killed. Usage: service.py TMPDIR [--rate N] [--cache N] [--fd-every S]
"""
import argparse
import gc
import json
import os
import time

REQUEST_LOG = []
CACHE = {}
OPEN_FILES = []


class Node:
    def __init__(self, payload):
        self.payload = payload
        self.peer = None


def handle_leak(i):
    body = ("%08d" % i) * 70  # LEAK:body
    REQUEST_LOG.append({"id": i, "path": "/api/items/%d" % i, "body": body})  # LEAK:log


def handle_cache(i, size):
    CACHE[i % size] = ("c%07d" % i) * 31 + "yy"  # CACHE


def handle_cycle(i):
    a = Node(bytearray(1500))  # CYCLE
    b = Node(bytearray(1500))  # CYCLE
    a.peer, b.peer = b, a


def handle_churn(i):
    return json.dumps(["s%d-%d" % (i, j) for j in range(50)])  # CHURN


def open_report(tmpdir, i):
    f = open(os.path.join(tmpdir, "report-%d.txt" % i), "w")  # LEAK:fd
    OPEN_FILES.append(f)


def read_config(tmpdir):
    with open(os.path.join(tmpdir, "config.txt"), "w") as f:  # NOLEAK:fd
        f.write("x")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("tmpdir")
    p.add_argument("--rate", type=int, default=1000, help="requests per second")
    p.add_argument("--cache", type=int, default=8000, help="cache entries")
    p.add_argument("--fd-every", type=float, default=1.0, help="seconds between leaked files")
    p.add_argument("--gc-every", type=float, default=3.0, help="seconds between full collections")
    a = p.parse_args()
    batch = max(1, a.rate // 100)
    i = 0
    next_fd = time.monotonic() + a.fd_every
    next_gc = time.monotonic() + a.gc_every
    with open(os.path.join(a.tmpdir, "ready"), "w"):
        pass
    while True:
        t0 = time.monotonic()
        for _ in range(batch):
            handle_leak(i)
            handle_cache(i, a.cache)
            handle_cycle(i)
            handle_churn(i)
            i += 1  # LEAK:id (the ids of the logged requests)
        if t0 >= next_gc:
            gc.collect()
            next_gc += a.gc_every
        if t0 >= next_fd:
            open_report(a.tmpdir, i)
            read_config(a.tmpdir)
            next_fd += a.fd_every
        time.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))


main()
