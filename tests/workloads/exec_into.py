"""Exec tests: once GO.start exists, keeps 1 MB (KEEP), grows a module global and holds a file
open (Python opens files O_CLOEXEC: the exec closes it); writes its pid to READY; once GO exists,
replaces itself (execv) with the command after GO.

    exec_into.py READY GO PROGRAM [ARGS...]
"""
import os
import sys
import time

ready, go, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
while not os.path.exists(go + ".start"):
    time.sleep(0.02)
KEEP = [bytearray(2000) for _ in range(500)]  # KEEP
BEFORE = []
f = open(ready + ".tmp", "w")
f.write(str(os.getpid()))
f.flush()
os.rename(ready + ".tmp", ready)
while not os.path.exists(go):
    BEFORE.append("before exec %d" % len(BEFORE))  # BEFORE
    time.sleep(0.01)
os.execv(cmd[0], cmd)
