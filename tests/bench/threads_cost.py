"""Watch mode's cost with many threads, measured: the tracer's CPU time (its utime + stime from
/proc, children excluded) while it watches a process of N idle threads (tests/workloads/
idle_threads.py: the threads wait on an event, the main thread leaks a file every half second)
for a fixed time, as a share of one core. The hostile list's case 13 (5,000 idle threads took
85% of a core; 200 took 33%).

Usage: threads_cost.py --tracer BIN --python PY [--threads N,N,...] [--seconds S]
Prints one line per thread count: tracer CPU seconds, share of a core, descriptors seen.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKLOAD = os.path.join(HERE, "..", "workloads", "idle_threads.py")


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args, n):
    w = subprocess.Popen([args.python, WORKLOAD, str(n)], stdout=subprocess.PIPE, text=True)
    try:
        if w.stdout.readline().strip() != "ready":
            raise SystemExit("the workload did not start")
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "out")
            t = subprocess.Popen([args.tracer, "record", "-p", str(w.pid), "--mode", "watch",
                                  "-o", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
            # Measured from the recording's start (attach excluded) for --seconds.
            for line in t.stderr:
                if "tracer: recording" in line:
                    break
            c0, t0 = cpu_seconds(t.pid), time.monotonic()
            time.sleep(args.seconds)
            c1, t1 = cpu_seconds(t.pid), time.monotonic()
            t.send_signal(2)
            stdout, _ = t.communicate(timeout=120)
            fds = next((l.split("open descriptors: ")[1].split()[0] for l in stdout.splitlines()
                        if "open descriptors: " in l), "?")
            return c1 - c0, (c1 - c0) / (t1 - t0), fds
    finally:
        w.kill()
        w.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tracer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--threads", default="200,5000")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    print("%8s %16s %14s %12s" % ("threads", "tracer CPU s", "% of a core", "open fds"))
    for n in (int(x) for x in args.threads.split(",")):
        cpu, share, fds = measure(args, n)
        print("%8d %16.2f %13.1f%% %12s" % (n, cpu, 100 * share, fds), flush=True)


if __name__ == "__main__":
    sys.exit(main())
