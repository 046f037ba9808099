"""A service-like workload that leaks a known amount of memory and known descriptors.

Leaks (kept until the process ends):
  - LEAKED_LIST: a global list that only grows (bytes objects of --item-size, plus small strings)
  - CACHE: an unbounded dict cache of small lists
  - --files files opened and never closed, --sockets UDP sockets never closed, --pipes pipes
Healthy work (must not be reported): transient objects freed at once, reference cycles collected
by the gc, files and sockets opened and closed.

Protocol: optionally write GO_FILE.ready once started and wait for --go-file to exist, do the work, write --done-file (JSON: what was
leaked and, with --tracemalloc, the bytes tracemalloc measured for the window), then sleep until
killed (or exit with --exit).
"""
import argparse
import gc
import json
import os
import socket
import sys
import time

LEAKED_LIST = []
CACHE = {}
LEAKED_FILES = []
LEAKED_SOCKETS = []
LEAKED_PIPES = []


def leak_list(n, size):
    for i in range(n):
        LEAKED_LIST.append(b"x" * size)
        LEAKED_LIST.append(("%08d" % i) * 12)


def leak_cache(n):
    for i in range(n):
        CACHE["key-%d" % i] = [i, i + 1, i + 2, str(i)]


def healthy_churn(rounds):
    for _ in range(rounds):
        tmp = [("t%d" % i) * 10 for i in range(2000)]
        blob = [bytearray(2048) for _ in range(200)]
        del tmp, blob
        # Reference cycles: garbage that only the gc frees.
        for _ in range(300):
            a, b = [], []
            a.append(b)
            b.append(a)
        gc.collect()


def leak_descriptors(tmpdir, files, closed, sockets, pipes):
    paths = []
    for i in range(files):
        p = os.path.join(tmpdir, "leaked-%d.txt" % i)
        f = open(p, "w")
        f.write("x")
        LEAKED_FILES.append(f)
        paths.append(p)
    for i in range(closed):
        p = os.path.join(tmpdir, "closed-%d.txt" % i)
        with open(p, "w") as f:
            f.write("y")
    for _ in range(sockets):
        LEAKED_SOCKETS.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    for _ in range(closed):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.close()
    for _ in range(pipes):
        LEAKED_PIPES.append(os.pipe())
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return paths


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--go-file")
    ap.add_argument("--done-file", required=True)
    ap.add_argument("--tmpdir", required=True)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--item-size", type=int, default=1000)
    ap.add_argument("--cache", type=int, default=2000)
    ap.add_argument("--files", type=int, default=7)
    ap.add_argument("--closed", type=int, default=5)
    ap.add_argument("--sockets", type=int, default=3)
    ap.add_argument("--pipes", type=int, default=2)
    ap.add_argument("--churn", type=int, default=3)
    ap.add_argument("--tracemalloc", action="store_true",
                    help="measure the window's outstanding bytes with tracemalloc")
    ap.add_argument("--tracemalloc-total", action="store_true",
                    help="report tracemalloc's total (run with -X tracemalloc to count from start-up)")
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
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]

    healthy_churn(args.churn)
    leak_list(args.items, args.item_size)
    leak_cache(args.cache)
    healthy_churn(args.churn)
    paths = leak_descriptors(args.tmpdir, args.files, args.closed, args.sockets, args.pipes)
    gc.collect()

    result = {
        "pid": os.getpid(),
        "files": paths,
        "sockets": args.sockets,
        "pipes": args.pipes,
        "version": "%d.%d" % sys.version_info[:2],
    }
    if args.tracemalloc:
        result["tracemalloc_bytes"] = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    if args.tracemalloc_total:
        import tracemalloc
        result["tracemalloc_total"] = tracemalloc.get_traced_memory()[0]
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
