"""cargo xtask bench: wall time of an allocation-heavy loop, untraced, under do-nothing uprobes on
the same allocator functions (the floor: the cost of the traps alone), and traced by tracer.
Ratios are computed within one run. Usage: bench.py --tracer BIN --python PY [--iterations N]"""
import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


bpf_ns = {}
ENTRY_PROGRAMS = ("malloc_enter", "calloc_enter", "realloc_enter")


def bpf_cost():
    """Average run time (ns) of the allocation entry programs, from kernel.bpf_stats_enabled."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    ns = cnt = 0
    for p in json.loads(out or "[]"):
        if p.get("name") in ENTRY_PROGRAMS:
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns / cnt if cnt else None


def one_run(args, mode, workdir):
    go = os.path.join(workdir, "go")
    result = os.path.join(workdir, "result")
    for p in (go, result):
        if os.path.exists(p):
            os.remove(p)
    w = subprocess.Popen([args.python, os.path.join(HERE, "alloc_loop.py"), go, result, str(args.iterations)])
    tracer = None
    calls = None
    if mode != "untraced":
        time.sleep(0.5)  # the interpreter is up and waiting
        cmd = [args.tracer, "record", "-p", str(w.pid), "-o", os.path.join(workdir, "out-" + mode)]
        if mode == "floor":
            cmd.append("--floor")
        if mode == "traced-nowalk":
            cmd.append("--no-python-walk")
        tracer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            line = tracer.stderr.readline()
            if not line:
                raise SystemExit("tracer exited early")
            if "tracer: recording" in line:
                break
    open(go, "w").close()
    w.wait()
    with open(result) as f:
        loop_s = float(f.read())
    if tracer and mode.startswith("traced"):
        bpf_ns[mode] = bpf_cost()
    if tracer:
        tracer.send_signal(signal.SIGINT)
        out, _ = tracer.communicate(timeout=120)
        m = re.search(r"health: ([\d,]+) allocator calls, ([\d,]+) frees", out)
        if m:
            n = [int(g.replace(",", "")) for g in m.groups()]
            calls = 2 * n[0] + n[1]  # entry + return probe per allocation, one per free
    return loop_s, calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="tracer-bench-")
    try:
        times = {}
        calls = {}
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        for rep in range(args.repeat):
            for mode in ("untraced", "floor", "traced", "traced-nowalk"):
                t, c = one_run(args, mode, workdir)
                times.setdefault(mode, []).append(t)
                if c is not None:
                    calls[mode] = c
        med = {m: statistics.median(v) for m, v in times.items()}
        print("loop: %d iterations of (250-byte string kept, small dict, json.dumps of 50 strings), %s"
              % (args.iterations, args.python))
        print("%-10s %12s %14s %14s" % ("mode", "median loop s", "x untraced", "x floor"))
        for m in ("untraced", "floor", "traced", "traced-nowalk"):
            print("%-10s %12.3f %14.2f %14.3f" % (m, med[m], med[m] / med["untraced"], med[m] / med["floor"]))
        if "traced" in calls:
            per_hit = (med["floor"] - med["untraced"]) / max(calls["traced"], 1) * 1e6
            print("probe hits: %d; trap cost (floor - untraced) per hit: %.1f us; "
                  "tracer's own work over the floor: %+.1f%%"
                  % (calls["traced"], per_hit, (med["traced"] / med["floor"] - 1) * 100))
        if bpf_ns.get("traced") and bpf_ns.get("traced-nowalk"):
            print("BPF run time per allocation entry (kernel.bpf_stats_enabled): %.0f ns with the Python "
                  "walk, %.0f ns without (native stack only)" % (bpf_ns["traced"], bpf_ns["traced-nowalk"]))
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("0")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
