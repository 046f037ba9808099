"""Opens DIR/held and keeps it open, about once a millisecond, from start-up until DIR/stop
exists (then writes DIR/stopped and sleeps): a tracer attaching meanwhile sees descriptors
opened before, while and after it attaches.
Usage: open_loop.py DIR"""
import os
import sys
import time

KEPT = []


def hold(path):
    KEPT.append(open(path, "w"))  # LEAK:held


def main():
    d = sys.argv[1]
    held, stop = os.path.join(d, "held"), os.path.join(d, "stop")
    # Well below the usual descriptor limit, whatever the tracer's start-up time.
    while not os.path.exists(stop) and len(KEPT) < 15000:
        hold(held)
        time.sleep(0.001)
    with open(os.path.join(d, "stopped"), "w"):
        pass
    while True:
        time.sleep(1)


main()
