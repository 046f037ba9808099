"""Processes that come and go, for tests/churn.rs. Prints "ready" (flushed) once set up; fork,
spawn and reuse then wait for "go" on stdin (the test sends it once the tracer records). Then:
  fork N       forks N children one after the other (20 ms apart); each opens 3 files (leak_fd,
               line 25), lives 0.3 s and leaves with os._exit (the files open at its exit)
  popen N      starts N Pythons with subprocess.Popen([sys.executable, ...]) at once; each opens
               a file after 0.5 s (its own line 3) and leaves with os._exit 2 s later
  spawn        starts a short-lived Python every 0.2 s until killed
  reuse DIR    forks a child that opens 2 files and exits; then makes the next pid the same
               (ns_last_pid) and forks one that opens 1 file and sleeps; writes both pids to DIR
  exec K TOP GO  waits for the file GO (the first program), opens a file named after K a second
               in, then execs itself with K-1 two seconds later (down to 0, which sleeps)
"""
import os
import subprocess
import sys
import time

mode = sys.argv[1]
CHILD = "import os, time\ntime.sleep(0.5)\nf = open('/dev/null')\ntime.sleep(2)\nos._exit(0)\n"


def wait_go():
    """Says "ready", then waits for the test's "go" on stdin (sent once the tracer records)."""
    print("ready", flush=True)
    sys.stdin.readline()


def leak_fd(path):
    return open(path)


if mode == "fork":
    wait_go()
    kids = []
    for _ in range(int(sys.argv[2])):
        pid = os.fork()
        if pid == 0:
            held = [leak_fd("/dev/null") for _ in range(3)]
            time.sleep(0.3)
            os._exit(0)
        kids.append(pid)
        time.sleep(0.02)
    for k in kids:
        os.waitpid(k, 0)
    time.sleep(3)
elif mode == "popen":
    time.sleep(0.5)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(int(sys.argv[2]))]
    for p in procs:
        p.wait()
    time.sleep(1.5)
elif mode == "spawn":
    wait_go()
    procs = []
    while True:
        # Without the test's pipes: a child alive when the test ends must not hold them.
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(1)"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        procs = [p for p in procs if p.poll() is None]
        time.sleep(0.2)
elif mode == "reuse":
    out = sys.argv[2]
    wait_go()
    first = os.fork()
    if first == 0:
        held = [leak_fd("/dev/null"), leak_fd("/dev/zero")]
        time.sleep(1.5)
        os._exit(0)
    os.waitpid(first, 0)
    time.sleep(1.5)
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(first - 1))
    second = os.fork()
    if second == 0:
        import ctypes
        ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG: SIGKILL when the parent goes
        held = [leak_fd("/etc/hostname")]
        time.sleep(3600)
    with open(os.path.join(out, "pids"), "w") as f:
        f.write("%d %d\n" % (first, second))
    time.sleep(3600)
elif mode == "exec":
    k, top, go = int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if k == int(top):
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.05)
    time.sleep(1)
    f = open("/tmp/churn-exec-%d-%d" % (os.getpid(), k), "w")
    time.sleep(2)
    if k > 0:
        os.execv(sys.executable, [sys.executable, __file__, "exec", str(k - 1), top, go])
    time.sleep(3600)
