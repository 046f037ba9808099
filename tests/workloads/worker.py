"""A worker whose state lives in the locals of its long-running loop, not in module globals:
a dict of strings that only grows (not tracked by the gc), a list on a local object that only
grows, and a list trimmed to a bounded size. Runs until killed. Usage: worker.py READY_FILE
"""
import sys
import time


class State:
    def __init__(self):
        self.pending = []


def run(ready):
    seen = {}
    recent = []
    state = State()
    open(ready, "w").close()
    i = 0
    while True:
        for _ in range(50):
            seen["job-%d" % i] = "done-%08d" % i
            state.pending.append((i, "p%d" % i))
            recent.append(i)
            if len(recent) > 200:
                del recent[:100]
            i += 1
        time.sleep(0.05)


if __name__ == "__main__":
    run(sys.argv[1])
