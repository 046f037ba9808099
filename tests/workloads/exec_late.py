"""Prints "ready", waits for "go" on stdin (the test sends it once the tracer is recording),
waits DELAY seconds more, then execs PYTHON running a loop that allocates and leaks a file
every 50 ms (line 5 of its <string>). Usage: exec_late.py DELAY PYTHON"""
import os
import sys
import time

print("ready", flush=True)
sys.stdin.readline()
time.sleep(float(sys.argv[1]))
code = (
    "import time\n"
    "keep = []\n"
    "while True:\n"
    "    keep.append(bytes(1000))\n"
    "    keep.append(open('/dev/null'))\n"
    "    time.sleep(0.05)\n"
)
os.execv(sys.argv[2], [sys.argv[2], "-c", code])
