"""Leaks from known lines, marked `# LEAK:<name>`; churn and collected cycles from lines marked
`# CHURN`. The tests find the line numbers by these markers.

Protocol: write GO_FILE.ready once started, wait for --go-file, work, write --done-file (JSON; with --tracemalloc, the bytes per
line that tracemalloc measured for the window), then sleep until killed.
"""
import argparse
import asyncio
import gc
import json
import os
import socket
import sys
import threading
import time

LIST = []
CACHE = {}


class Node:
    def __init__(self, i, parent):
        self.payload = bytearray(200 + i % 50)  # LEAK:node
        self.children = []  # LEAK:node
        self.parent = parent


class Registry:
    def __init__(self):
        self.nodes = {}

    def register(self, node):
        self.nodes[id(node)] = node  # LEAK:registry


REGISTRY = Registry()
FILES = []
SOCKETS = []


def leak_list(n):
    for i in range(n):
        LIST.append(("%08d" % i) * 40)  # LEAK:list


def leak_dict(n):
    for i in range(n):
        CACHE["key-%06d" % i] = [i, i + 1, i + 2, i + 3]  # LEAK:dict


def build_graph(n):
    root = Node(0, None)  # LEAK:graph
    for i in range(n):
        child = Node(i, root)  # LEAK:graph
        root.children.append(child)  # LEAK:graph
        REGISTRY.register(child)


def churn(rounds):
    for _ in range(rounds):
        tmp = [("t%d" % i) * 10 for i in range(3000)]  # CHURN
        blobs = [bytearray(1024) for _ in range(300)]  # CHURN
        del tmp, blobs
        for _ in range(500):
            a, b = [], []  # CHURN
            a.append(b)
            b.append(a)
        gc.collect()


def nested(depth, n):
    if depth == 0:
        return leak_list(n)
    return nested(depth - 1, n)


def thread_leak(n, out, barrier):
    barrier.wait()
    for i in range(n):
        out.append(b"T" * 600 + str(i).encode())  # LEAK:thread


def thread_leak2(n, out, barrier):
    barrier.wait()
    for i in range(n):
        out.append(("u%07d" % i) * 40)  # LEAK:thread2


THREAD_LIST = []
THREAD_LIST2 = []


def deep(depth, n):
    if depth == 0:
        return [bytes(3000 + i) for i in range(n)]  # LEAK:deep
    return deep(depth - 1, n)


def gen_leak(n):
    for i in range(n):
        yield ("g%07d" % i) * 30  # LEAK:gen


async def async_leak(n, out):
    for i in range(n):
        out.append(("a%07d" % i) * 30)  # LEAK:async
        if i % 500 == 0:
            await asyncio.sleep(0)


ASYNC_LIST = []
GEN_LIST = []
DEEP = []


def gen_files(tmpdir, n):
    for i in range(n):
        yield open(os.path.join(tmpdir, "gen-%d.txt" % i), "w")  # LEAK:gen-fd


async def async_files(tmpdir, n):
    for i in range(n):
        FILES.append(open(os.path.join(tmpdir, "async-%d.txt" % i), "w"))  # LEAK:async-fd
        await asyncio.sleep(0)


def thread_files(tmpdir, n):
    for i in range(n):
        FILES.append(open(os.path.join(tmpdir, "thread-%d.txt" % i), "w"))  # LEAK:thread-fd


def leak_descriptors(tmpdir, n):
    for i in range(n):
        FILES.append(open(os.path.join(tmpdir, "lines-%d.txt" % i), "w"))  # LEAK:file
    for i in range(n):
        with open(os.path.join(tmpdir, "closed-%d.txt" % i), "w") as f:  # CHURN
            f.write("x")
    for _ in range(n):
        SOCKETS.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # LEAK:socket
    # The same from a generator, a coroutine and a thread: their frames differ.
    FILES.extend(gen_files(tmpdir, n))  # LEAK:gen-fd-caller
    asyncio.run(async_files(tmpdir, n))
    t = threading.Thread(target=thread_files, args=(tmpdir, n))
    t.start()
    t.join()


def work(args):
    churn(args.churn)
    nested(5, args.n)
    leak_dict(args.n)
    build_graph(args.n // 2)
    # Two threads leaking at the same time, from different lines.
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=thread_leak, args=(args.n // 2, THREAD_LIST, barrier)),
        threading.Thread(target=thread_leak2, args=(args.n // 2, THREAD_LIST2, barrier)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    DEEP.extend(deep(80, 20))  # LEAK:deeplist
    GEN_LIST.extend(gen_leak(args.n // 2))  # LEAK:genlist
    asyncio.run(async_leak(args.n // 2, ASYNC_LIST))
    churn(args.churn)
    leak_descriptors(args.tmpdir, args.fds)
    gc.collect()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-file")
    ap.add_argument("--done-file", required=True)
    ap.add_argument("--tmpdir", required=True)
    ap.add_argument("-n", type=int, default=4000)
    ap.add_argument("--fds", type=int, default=5)
    ap.add_argument("--churn", type=int, default=2)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--exit", action="store_true")
    args = ap.parse_args()
    if args.go_file:
        # Imports and start-up are over: what is allocated from now on is the work's.
        with open(args.go_file + ".ready", "w"):
            pass
        while not os.path.exists(args.go_file):
            time.sleep(0.02)
    if args.tracemalloc:
        import tracemalloc
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
    work(args)
    result = {"pid": os.getpid(), "version": "%d.%d" % sys.version_info[:2]}
    if args.tracemalloc:
        after = tracemalloc.take_snapshot()
        me = os.path.abspath(__file__)
        per_line = {}
        for stat in after.compare_to(before, "lineno"):
            frame = stat.traceback[0]
            if os.path.abspath(frame.filename) == me:
                per_line[str(frame.lineno)] = per_line.get(str(frame.lineno), 0) + stat.size_diff
        result["tracemalloc_lines"] = per_line
        tracemalloc.stop()
    tmp = args.done_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.rename(tmp, args.done_file)
    if args.exit:
        return
    while True:
        time.sleep(0.2)


if __name__ == "__main__":
    main()
