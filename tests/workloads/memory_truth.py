"""Memory of known shape, and the process's own account of it, for tests/resident.rs: small
objects (pymalloc), a list of them mostly freed (free pools), malloc chunks of several sizes
kept and freed (glibc), a large chunk mapped on its own, a thread. Then the ground truth: the
interpreter's `sys._debugmallocstats()` (to stderr) and glibc's `mallinfo2()`, written to
OUT (JSON) while nothing else allocates, then idles (no allocation: the tracer reads the same
heap). Usage: memory_truth.py OUT"""
import ctypes
import json
import os
import sys
import threading
import time

out = sys.argv[1]
kept = [("x%d" % i, i, [i]) for i in range(200_000)]
churn = [("y%d" % i, [i, i]) for i in range(300_000)]
del churn[::3]
bufs = [bytearray(1000 + i % 3000) for i in range(6000)]
del bufs[::2]
big = bytearray(8 << 20)
ev = threading.Event()
t = threading.Thread(target=ev.wait, daemon=True)
t.start()


class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
truth = {"pid": os.getpid()}
# Everything the ground truth needs is allocated first; then the two readings, back to back.
sys.stderr.flush()
sys._debugmallocstats()
mi = libc.mallinfo2()
truth["mallinfo2"] = {n: getattr(mi, n) for n, _ in Mallinfo2._fields_}
with open(out + ".tmp", "w") as f:
    json.dump(truth, f)
os.replace(out + ".tmp", out)
while True:
    time.sleep(3600)
