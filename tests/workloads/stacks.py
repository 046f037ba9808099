"""Keeps one object allocated from each of N distinct Python stacks (N functions, each its own
code object), then idles: the tracer's memory with many distinct stacks. Waits for a go file,
allocates, writes the done file, sleeps until killed. Usage: stacks.py GO DONE N"""
import os
import sys
import time

go, done, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
KEEP = []
src = "".join("def f%d(keep):\n    keep.append(bytearray(%d))\n" % (i, 64 + i % 64) for i in range(n))
ns = {}
exec(compile(src, "distinct_stacks.py", "exec"), ns)
funcs = [ns["f%d" % i] for i in range(n)]
while not os.path.exists(go):
    time.sleep(0.01)
for f in funcs:
    f(KEEP)
with open(done + ".tmp", "w") as fh:
    fh.write("ok")
os.replace(done + ".tmp", done)
while True:
    time.sleep(1)
