"""Leaks memory and a file, then, once argv[2] exists, replaces itself with `sleep` (execve)."""
import os
import sys
import time

ready, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go + ".start"):
    time.sleep(0.02)
KEEP = [bytearray(2000) for _ in range(500)]  # 1 MB
f = open(ready, "w")  # not CLOEXEC-free: Python opens files O_CLOEXEC, so exec closes it
f.write("x")
f.flush()
while not os.path.exists(go):
    time.sleep(0.02)
os.execv("/bin/sleep", ["sleep", "30"])
