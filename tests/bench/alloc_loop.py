"""The allocation-heavy loop of the benchmarks: waits for a go file, runs the loop, writes the
loop's wall time (seconds) to the result file, exits."""
import json
import os
import sys
import time

go, result, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.01)
kept = []


def loop():
    for i in range(iterations):
        kept.append(("%08d" % i) * 31 + "xx")           # a 250-byte string, kept
        d = {"id": i, "name": "n%d" % i}                 # a small dict
        json.dumps(["s%d-%d" % (i, j) for j in range(50)])  # 50 strings, a list, a JSON string


def nest(depth):
    # Run the loop 10 Python frames deep, like a request handler inside a framework.
    return loop() if depth == 0 else nest(depth - 1)


t0 = time.perf_counter()
nest(10)
elapsed = time.perf_counter() - t0
with open(result + ".tmp", "w") as f:
    f.write(repr(elapsed))
os.rename(result + ".tmp", result)
