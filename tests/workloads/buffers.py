"""Containers whose items own buffers, or share objects, kept at a steady pace (a leak each):
  numpy      a 64 KiB numpy array every 20 ms in a module list (and a view of it, not kept)
  records    a small dict per "session" in a module dict: {"uid": int, "scopes": [2 str],
             "history": [the same int x 20]} (items that share objects)
  bytes      a bytearray, an array.array and an io.BytesIO of 16 KiB each every 20 ms
Prints "ready", then runs until killed. Usage: buffers.py MODE"""
import array
import io
import sys
import time

mode = sys.argv[1]
KEPT = []
SESSIONS = {}
SCOPES = ("read", "write")
if mode == "numpy":
    # Imported before "ready": a tracer attaching then sees the loop, not numpy's import.
    import numpy as np
print("ready", flush=True)
i = 0
while True:
    i += 1
    if mode == "numpy":
        a = np.ones(8192, dtype=np.float64)
        view = a[::2]
        KEPT.append(a)
        del view
    elif mode == "records":
        token = "session-%d" % i
        seen = 1000 + i
        SESSIONS[token] = {"uid": 100000 + i, "scopes": [SCOPES[0], SCOPES[1]], "history": [seen] * 20}
    elif mode == "bytes":
        KEPT.append(bytearray(16384))
        KEPT.append(array.array("d", bytes(16384)))
        KEPT.append(io.BytesIO(bytes(16384)))
    time.sleep(0.02)
