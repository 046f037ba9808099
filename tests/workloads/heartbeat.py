"""Allocates steadily and writes a growing counter to argv[1]; runs until killed."""
import sys
import time

path = sys.argv[1]
n = 0
keep = []
while True:
    n += 1
    keep.append("beat-%d" % n)
    if len(keep) > 1000:
        keep.clear()
    with open(path + ".tmp", "w") as f:
        f.write(str(n))
    import os
    os.replace(path + ".tmp", path)
    time.sleep(0.05)
