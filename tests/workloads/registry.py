"""Leaks held the ways services hold them, for the heap census: an instance attribute of a module
global, a value under a key of a global dict, a class attribute, an unbounded dict keyed by name;
next to a bounded cache kept on the same instance (fills, then stays flat), reference cycles the
gc collects, and transient work.

Lines marked `# USE:<name>` load the global the leak hangs from. Runs until killed.
Usage: registry.py READY_FILE
"""
import gc
import sys
import time


class Registry:
    def __init__(self):
        self.items = []
        self.by_name = {}
        self.lru = {}


class Store:
    history = []


class Node:
    def __init__(self):
        self.peer = None
        self.blob = bytearray(512)


REG = Registry()
SESSIONS = {"users": [], "admins": []}


def register(i):
    REG.items.append(("item-%08d" % i) * 8)  # USE:items
    REG.by_name["n%d" % i] = [i, str(i)]  # USE:by_name


def remember(i):
    REG.lru[i % 500] = "v%d" % i  # USE:lru


def open_session(i):
    SESSIONS["users"].append({"id": i, "token": "t%016d" % i})  # USE:sessions
    Store.history.append(i * 1.5)  # USE:history


def cycles():
    a, b = Node(), Node()
    a.peer, b.peer = b, a


def main():
    i = 0
    last_gc = time.monotonic()
    with open(sys.argv[1], "w"):
        pass
    while True:
        for _ in range(50):
            register(i)
            remember(i)
            open_session(i)
            cycles()
            "".join(str(j) for j in range(20))
            i += 1
        # The collected cycles are collected every second of wall time, also when a loaded
        # machine slows the loop down (the census passes come every few seconds).
        if time.monotonic() - last_gc >= 1.0:
            gc.collect()
            last_gc = time.monotonic()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
