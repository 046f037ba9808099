"""A healthy service loop: transient work, a bounded cache that is already full, reference cycles
that the gc collects, and files that are closed. Nothing grows. Usage: steady.py TMPDIR"""
import gc
import json
import os
import sys
import time

CACHE = {i: "v%d" % i * 20 for i in range(500)}


class Node:
    def __init__(self):
        self.peer = None
        self.data = bytearray(800)


def step(tmpdir, i):
    CACHE[i % 500] = "v%d" % i * 20
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    json.dumps([str(j) for j in range(40)])
    with open(os.path.join(tmpdir, "state.txt"), "w") as f:
        f.write(str(i))


def main():
    tmpdir = sys.argv[1]
    with open(os.path.join(tmpdir, "ready"), "w"):
        pass
    i = 0
    next_gc = time.monotonic() + 3
    while True:
        for _ in range(5):
            step(tmpdir, i)
            i += 1
        if time.monotonic() >= next_gc:
            gc.collect()
            next_gc += 3
        time.sleep(0.01)


main()
