"""Grows a module global from one marked line (`# LEAK:grow`), about 200 KB a second, writing
its pid to --ready once started; exits after --seconds (default: never) at once (os._exit: no
interpreter finalization, which would free the leak while traced). With --files, also
opens and closes a file per step; with --fork, forks a child that allocates and exits; with
--then PROGRAM ARGS..., execs that instead of exiting."""
import argparse
import os
import time

p = argparse.ArgumentParser()
p.add_argument("--ready")
p.add_argument("--seconds", type=float, default=0)
p.add_argument("--files")
p.add_argument("--fork", action="store_true")
p.add_argument("--then", nargs=argparse.REMAINDER)
a = p.parse_args()

GROW = []


def leak():
    GROW.append(bytearray(2000))  # LEAK:grow


def churn():
    tmp = [str(i) * 10 for i in range(20)]
    if a.files:
        with open(a.files, "w") as f:
            f.write(",".join(tmp))


if a.fork:
    pid = os.fork()
    if pid == 0:
        churn()
        os._exit(0)
    os.waitpid(pid, 0)
if a.ready:
    with open(a.ready + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(a.ready + ".tmp", a.ready)
start = time.time()
while not a.seconds or time.time() - start < a.seconds:
    leak()
    churn()
    time.sleep(0.01)
if a.then:
    os.execv(a.then[0], a.then)
os._exit(0)
