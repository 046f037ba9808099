"""Keeps N small objects alive, then idles: the tracer's resources at scale. Waits for a go file,
allocates N objects (one allocator call each, few others), writes the done file, sleeps until
killed. Usage: hold.py GO DONE N"""
import itertools
import os
import sys
import time

go, done, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
while not os.path.exists(go):
    time.sleep(0.01)


def hold(n):
    # object.__new__ over a repeated argument: one 16-byte block per object, no temporaries.
    return list(map(object.__new__, itertools.repeat(object, n)))


kept = hold(n)
with open(done + ".tmp", "w") as f:
    f.write(str(len(kept)))
os.replace(done + ".tmp", done)
while True:
    time.sleep(3600)
