"""Recycled objects: a loop that leaks a string list and a dict cache (a small dict per
iteration) next to transient json.dumps work, collected reference cycles and a bounded cache.
CPython hands the lists, dicts, tuples and floats that the transient work frees back out of its
free lists without calling the allocator, so the leaked dicts reuse the json work's blocks.
Leaking lines are marked `# LEAK`, the others `# CHURN`; the tests find them by these markers.

Protocol: `recycle.py GO_FILE`: writes GO_FILE.ready once started (imports done), waits for
GO_FILE, then works until killed.
"""
import gc
import json
import os
import sys
import time

STRINGS = []
CACHE = {}
BOUNDED = {}


def transient(i):
    doc = {"id": i, "tags": ["a", "b", str(i)], "vals": [i * 0.5, i * 1.5], "sub": {"k": (i, 2)}}  # CHURN
    return json.dumps(doc)  # CHURN


def cycles(i):
    a = {"i": i}  # CHURN
    b = [a, [i]]  # CHURN
    a["b"] = b


def bounded(i):
    BOUNDED[i % 64] = [i, i + 1.5]  # CHURN


def leak(i):
    STRINGS.append("s%07d" % i * 8)  # LEAK
    CACHE["k%07d" % i] = {"id": -i, "at": i * 0.25}  # LEAK


def main():
    go = sys.argv[1]
    with open(go + ".ready", "w"):
        pass
    while not os.path.exists(go):
        time.sleep(0.02)
    i = 0
    while True:
        for _ in range(100):
            i += 1
            transient(i)
            cycles(i)
            bounded(i)
            leak(i)
        if i % 2000 == 0:
            gc.collect()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
