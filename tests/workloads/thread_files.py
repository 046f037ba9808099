"""Short-lived threads, each opening a file at once and leaking it: their Python frames must be
found although no thread lives long enough for the tracer's periodic thread refresh.
Usage: thread_files.py TMPDIR"""
import os
import sys
import threading
import time

LEAKED = []


def leak_in_thread(tmpdir, i):
    LEAKED.append(open(os.path.join(tmpdir, "t-%d.txt" % i), "w"))  # LEAK:thread-fd


def main():
    tmpdir = sys.argv[1]
    with open(os.path.join(tmpdir, "ready"), "w"):
        pass
    i = 0
    while True:
        t = threading.Thread(target=leak_in_thread, args=(tmpdir, i))
        t.start()
        t.join()
        i += 1
        time.sleep(0.2)


main()
