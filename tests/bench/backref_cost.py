"""The census's back-reference search, measured: tracer's CPU time per census pass on a heap of
about 1M gc-tracked objects, with one growing container that no short path names (four
attributes below a module global: only the search names it) and, for reference, the same heap
with the container as a module global (named at once, no search).

Usage: backref_cost.py --tracer BIN --python PY [--objects N] [--seconds S] [--interval I]
Prints one line per case: passes, tracer CPU seconds, ms per pass, the container's name.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

TARGET = r'''
import sys, time

class Node:
    def __init__(self, i):
        self.i = i
        self.peer = None

class Holder:
    def __init__(self, inner=None):
        self.inner = inner
        self.cache = {}

N = int(sys.argv[1])
BIG = [Node(i) for i in range(N // 2)] + [[i] for i in range(N // 2)]
HIDDEN = Holder(Holder(Holder(Holder())))
CACHE = {}
HIDE = sys.argv[2] == "hidden"
print("ready", flush=True)
i = 0
while True:
    for _ in range(100):
        if HIDE:
            HIDDEN.inner.inner.inner.cache[i] = [i]
        else:
            CACHE[i] = [i]
        i += 1
    time.sleep(0.05)
'''


def run(args, case):
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "heap.py")
        with open(script, "w") as f:
            f.write(TARGET)
        w = subprocess.Popen([args.python, script, str(args.objects), case], stdout=subprocess.PIPE)
        try:
            w.stdout.readline()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = subprocess.run([args.tracer, "record", "-p", str(w.pid), "--mode", "watch", "-d",
                                f"{args.seconds}s", "--interval", f"{args.interval}s", "-o",
                                os.path.join(d, "out")], capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        finally:
            w.kill()
            w.wait()
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        with open(os.path.join(d, "out", "report.json")) as f:
            census = json.load(f)["processes"][0]["census"]
        growing = [c for c in census["containers"] if c["verdict"] == "growing"]
        name = growing[0]["name"] if growing else None
        passes = census["passes"]
        print(f"{case:6}: {census['objects']} objects, {passes} passes, tracer CPU {cpu:.2f} s "
              f"({1000 * cpu / max(passes, 1):.0f} ms/pass), last pass {census['last_pass_ms']:.0f} ms, "
              f"growing: {name}", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tracer", required=True)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--objects", type=int, default=1_000_000)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--interval", type=int, default=5)
    args = p.parse_args()
    for case in ("named", "hidden"):
        run(args, case)


if __name__ == "__main__":
    main()
