"""Leaks memory and a file, then, once argv[2] exists, replaces itself with `sleep` (execve).
Just before the exec it closes a file it had kept open (READY.closed) and opens another one
(READY.late): the entry of the program before the exec must show the descriptors as they were
at the exec, not as the tracer last read them."""
import os
import sys
import time

ready, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go + ".start"):
    time.sleep(0.02)
KEEP = [bytearray(2000) for _ in range(500)]  # 1 MB
closed = open(ready + ".closed", "w")
f = open(ready, "w")  # not CLOEXEC-free: Python opens files O_CLOEXEC, so exec closes it
f.write("x")
f.flush()
while not os.path.exists(go):
    time.sleep(0.02)
closed.close()
late = open(ready + ".late", "w")
os.execv("/bin/sleep", ["sleep", "30"])
