"""cargo xtask bench: wall time of an allocation-heavy loop (time of the loop only, start-up
excluded), as ratios to untraced within one run:
  A. exact mode: untraced, under do-nothing uprobes on the same allocator functions (the floor:
     the cost of the traps alone), traced, traced without the Python walk, traced without the
     recycled-object probes (_Py_NewReference & co., --no-recycle) (short loop: exact mode costs
     a trap per allocation);
  B. the issue's loop (20,000 iterations): untraced, watch mode (the default: no allocator probe;
     heap census, stack samples, descriptors), watch mode with --budget 2 (allocator windows; the
     first opens at attach, right when the loop starts: the worst case), the same between two
     windows, tracemalloc (1 and 25 frames), memray (installed from PyPI into a venv under target/
     by this script);
  C. a long loop (about 40 s; with --budget 2 the first window, opened at attach, is amortized as
     in a service, the next one comes ~45 s later): untraced, watch, watch --no-cpu-samples
     (the census's on-CPU stack sampler left off), watch --budget 2;
  D. requests per second of a Flask app under gunicorn driven by wrk: untraced, watch, watch
     --budget 2, exact.
  S. the tracer's own resources at scale (not in the default parts: --parts S): exact mode on a
     process that allocates --scale small objects while traced, keeps them and idles; the
     tracer's peak RSS (VmHWM, from wait4) and the time from SIGINT to its exit, reports written.
Usage: bench.py --tracer BIN --python PY --venv DIR [--parts ABCDS]"""
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


RECYCLE_PROGRAMS = ("new_reference", "new_keys_exit", "new_object_exit", "dict_items_exit",
                    "free_keys_arg0", "free_keys_arg1")


def bpf_cost(names=ENTRY_PROGRAMS):
    """Average run time (ns) of the programs `names` (bpftool truncates names to 15
    characters), from kernel.bpf_stats_enabled."""
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True).stdout
    ns = cnt = 0
    for p in json.loads(out or "[]"):
        if p.get("name") in [n[:15] for n in names]:
            ns += p.get("run_time_ns", 0)
            cnt += p.get("run_cnt", 0)
    return ns / cnt if cnt else None


def start_tracer(cmd):
    """Starts `tracer record` (its earlier reports in the same directory replaced: --force) and
    returns once it records."""
    tracer = subprocess.Popen(cmd + ["--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    while True:
        line = tracer.stderr.readline()
        if not line:
            raise SystemExit("tracer exited early")
        if "tracer: recording" in line:
            return tracer


def one_run(args, mode, workdir, iterations):
    go = os.path.join(workdir, "go")
    result = os.path.join(workdir, "result")
    for p in (go, result):
        if os.path.exists(p):
            os.remove(p)
    loop = [os.path.join(HERE, "alloc_loop.py"), go, result, str(iterations)]
    if mode.startswith("tracemalloc-"):
        cmd = [args.python, "-X", "tracemalloc=" + mode.split("-")[1]] + loop
    elif mode == "memray":
        cmd = [os.path.join(args.venv, "bin", "memray"), "run", "-f", "-q", "-o",
               os.path.join(workdir, "memray.bin")] + loop
    else:
        cmd = [args.python] + loop
    w = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    tracer = None
    calls = None
    if mode in ("floor", "traced", "traced-nowalk", "traced-norecycle", "watch", "watch-windows",
                "watch-windows-between", "watch-nocpu"):
        time.sleep(0.5)  # the interpreter is up and waiting
        cmd = [args.tracer, "record", "-p", str(w.pid), "-o", os.path.join(workdir, "out-" + mode)]
        if mode == "floor":
            cmd.append("--floor")
        if mode == "traced-nowalk":
            cmd.append("--no-python-walk")
        if mode == "traced-norecycle":
            cmd.append("--no-recycle")
        if mode.startswith("watch"):
            cmd += ["--mode", "watch"]
        if mode == "watch-nocpu":
            cmd.append("--no-cpu-samples")
        if mode.startswith("watch") and args.interval:
            cmd += ["--interval", args.interval]
        if mode.startswith("watch-windows"):
            cmd += ["--budget", "2"]
        tracer = start_tracer(cmd)
        if mode == "watch-windows-between":
            time.sleep(1.5)  # after the first window: the loop runs between two windows
    else:
        # Let the tool start (memray, tracemalloc) before the loop: start-up is not measured.
        time.sleep(1.5 if mode == "memray" else 0.5)
    open(go, "w").close()
    w.wait()
    with open(result) as f:
        loop_s = float(f.read())
    if tracer and mode.startswith("traced"):
        bpf_ns[mode] = bpf_cost()
        if mode == "traced":
            bpf_ns["recycle"] = bpf_cost(RECYCLE_PROGRAMS)
    if tracer:
        tracer.send_signal(signal.SIGINT)
        out, _ = tracer.communicate(timeout=120)
        m = re.search(r"health: ([\d,]+) allocator calls, ([\d,]+) frees", out)
        if m:
            n = [int(g.replace(",", "")) for g in m.groups()]
            calls = 2 * n[0] + n[1]  # entry + return probe per allocation, one per free
    return loop_s, calls


def scale_run(args, workdir, n):
    """Part S: returns (peak RSS in MiB, seconds from SIGINT to the summary written, seconds from
    SIGINT to exit, seconds to allocate, the outstanding allocations the summary reports)."""
    go = os.path.join(workdir, "go")
    done = os.path.join(workdir, "done")
    for p in (go, done):
        if os.path.exists(p):
            os.remove(p)
    w = subprocess.Popen([args.python, os.path.join(HERE, "..", "workloads", "hold.py"), go, done,
                          str(n)])
    try:
        time.sleep(0.5)
        out_dir = os.path.join(workdir, "out-scale")
        tracer = start_tracer([args.tracer, "record", "-p", str(w.pid), "-o", out_dir])
        t0 = time.monotonic()
        open(go, "w").close()
        while not os.path.exists(done):
            time.sleep(0.05)
        alloc_s = time.monotonic() - t0
        time.sleep(3)  # a few ticks over the full map
        summary = os.path.join(out_dir, "summary.txt")
        if os.path.exists(summary):
            os.remove(summary)
        stopped = time.monotonic()
        tracer.send_signal(signal.SIGINT)
        # wait4 gives the child's peak resident set (ru_maxrss, KiB): VmHWM at its exit.
        reports_s = None
        while True:
            pid, status, usage = os.wait4(tracer.pid, os.WNOHANG)
            if reports_s is None and os.path.exists(summary):
                reports_s = time.monotonic() - stopped
            if pid:
                break
            time.sleep(0.005)
        exit_s = time.monotonic() - stopped
        tracer.returncode = os.waitstatus_to_exitcode(status)
        out = tracer.stdout.read()
        err = tracer.stderr.read()
        if tracer.returncode != 0:
            raise SystemExit("tracer failed (%d): %s" % (tracer.returncode, err))
        m = re.search(r"outstanding: .* in ([\d,]+) allocations", out)
        count = int(m.group(1).replace(",", "")) if m else None
        return usage.ru_maxrss / 1024.0, reports_s, exit_s, alloc_s, count
    finally:
        w.kill()
        w.wait()


def ensure_venv(args):
    """memray from PyPI, in a venv of the benchmarked interpreter."""
    memray = os.path.join(args.venv, "bin", "memray")
    if not os.path.exists(memray):
        subprocess.run([args.python, "-m", "venv", args.venv], check=True)
    if not os.path.exists(os.path.join(args.venv, "bin", "gunicorn")):
        subprocess.run([os.path.join(args.venv, "bin", "pip"), "install", "-q", "memray", "flask",
                        "gunicorn"], check=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return memray


def wsgi_run(args, mode, workdir, seconds):
    """Requests per second of a Flask app under gunicorn (one sync worker), driven by wrk over
    loopback; `mode` attaches tracer to the worker."""
    port = "18765"
    g = subprocess.Popen([os.path.join(args.venv, "bin", "gunicorn"), "-w", "1", "-b", "127.0.0.1:" + port,
                          "--chdir", HERE, "wsgi_app:app"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The tracer attaches right before the measured load: its first window (opened at once)
    # falls inside the measurement, the worst case.
    tracer = None
    try:
        url = "http://127.0.0.1:%s/items/7?q=x" % port
        for _ in range(100):
            if subprocess.run(["curl", "-sf", url], stdout=subprocess.DEVNULL).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["wrk", "-t", "1", "-c", "8", "-d", "2s", url], capture_output=True)  # warm-up
        worker = subprocess.run(["pgrep", "-P", str(g.pid)], capture_output=True, text=True).stdout.split()[0]
        if mode != "untraced":
            cmd = [args.tracer, "record", "-p", worker, "-o", os.path.join(workdir, "wsgi-" + mode)]
            if mode.startswith("watch"):
                cmd += ["--mode", "watch"]
            if mode == "watch-windows":
                cmd += ["--budget", "2"]
            tracer = start_tracer(cmd)
        out = subprocess.run(["wrk", "-t", "1", "-c", "8", "-d", "%ds" % seconds, url],
                             capture_output=True, text=True).stdout
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    finally:
        if tracer:
            tracer.send_signal(signal.SIGINT)
            tracer.communicate(timeout=120)
        g.send_signal(signal.SIGTERM)
        g.wait(timeout=30)
    return rps


def table(title, med, modes, base="untraced", extra=None):
    print(title)
    print("%-22s %14s %12s%s" % ("mode", "median loop s", "x untraced", "" if not extra else "  x floor"))
    for m in modes:
        if m in med:
            x = "" if not extra else "  %7.3f" % (med[m] / med[extra])
            print("%-22s %14.3f %12.3f%s" % (m, med[m], med[m] / med[base], x))
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracer", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--venv", required=True)
    ap.add_argument("--iterations", type=int, default=1000, help="part A")
    ap.add_argument("--long", type=int, default=3000000, help="part C")
    ap.add_argument("--interval", help="watch modes: tracer's --interval (census passes; 2s lets "
                    "the on-CPU sampler, on once the kept list rose three passes, run in part C)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--wsgi-seconds", type=int, default=45)
    ap.add_argument("--parts", default="ABCD", help="which parts to run (S: resources at scale)")
    ap.add_argument("--scale", type=int, default=1000000, help="part S: outstanding allocations")
    args = ap.parse_args()
    if args.parts.strip("S") or not args.parts:
        ensure_venv(args)
    workdir = tempfile.mkdtemp(prefix="tracer-bench-")
    try:
        parts = {"A": {}, "B": {}, "C": {}}
        rps = {}
        calls = {}
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        plan = [("A", args.iterations, ("untraced", "floor", "traced", "traced-nowalk",
                                        "traced-norecycle")),
                ("B", 20000, ("untraced", "watch", "watch-windows", "watch-windows-between",
                              "tracemalloc-1", "tracemalloc-25", "memray")),
                ("C", args.long, ("untraced", "watch", "watch-nocpu", "watch-windows"))]
        for rep in range(args.repeat):
            for part, n, modes in plan:
                if part not in args.parts:
                    continue
                for mode in modes:
                    t, c = one_run(args, mode, workdir, n)
                    parts[part].setdefault(mode, []).append(t)
                    if c is not None and part == "A":
                        calls[mode] = c
            for mode in ("untraced", "watch", "watch-windows", "exact") if "D" in args.parts else ():
                rps.setdefault(mode, []).append(wsgi_run(args, mode, workdir, args.wsgi_seconds))
        med = {p: {m: statistics.median(v) for m, v in d.items()} for p, d in parts.items()}
        print("loop: iterations of (250-byte string kept, small dict, json.dumps of 50 strings), "
              "10 Python frames deep, %s; median of %d runs\n" % (args.python, args.repeat))
        if "A" in args.parts:
            table("A. exact mode, %d iterations" % args.iterations, med["A"],
                  ("untraced", "floor", "traced", "traced-nowalk", "traced-norecycle"),
                  extra="floor")
        a = med["A"]
        if "traced" in calls:
            per_hit = (a["floor"] - a["untraced"]) / max(calls["traced"], 1) * 1e6
            print("probe hits: %d; trap cost (floor - untraced) per hit: %.1f us; "
                  "tracer's own work over the floor: %+.1f%%"
                  % (calls["traced"], per_hit, (a["traced"] / a["floor"] - 1) * 100))
        if bpf_ns.get("traced") and bpf_ns.get("traced-nowalk"):
            print("BPF run time per allocation entry (kernel.bpf_stats_enabled): %.0f ns with the Python "
                  "walk, %.0f ns without (native stack only)" % (bpf_ns["traced"], bpf_ns["traced-nowalk"]))
        if bpf_ns.get("recycle"):
            print("BPF run time per recycled-object probe hit (_Py_NewReference & co.): %.0f ns"
                  % bpf_ns["recycle"])
        print()
        if "B" in args.parts:
            table("B. the issue's loop, 20000 iterations", med["B"],
                  ("untraced", "watch", "watch-windows", "watch-windows-between", "tracemalloc-1",
                   "tracemalloc-25", "memray"))
        if "C" in args.parts:
            table("C. long loop, %d iterations" % args.long, med["C"],
                  ("untraced", "watch", "watch-nocpu", "watch-windows"))
        if "S" in args.parts:
            print("S. exact mode, a process keeping %d small objects allocated while traced, then idle; "
                  "SIGINT 3 s later" % args.scale)
            print("%4s %16s %21s %18s %14s %22s" % ("run", "tracer peak MiB", "SIGINT to reports s",
                                                    "SIGINT to exit s", "allocating s", "allocations reported"))
            for rep in range(args.repeat):
                rss, reports_s, exit_s, alloc_s, count = scale_run(args, workdir, args.scale)
                print("%4d %16.1f %21s %18.2f %14.1f %22s" % (
                    rep + 1, rss, "%.2f" % reports_s if reports_s is not None else "?", exit_s, alloc_s, count),
                    flush=True)
            print()
        r = {m: statistics.median(v) for m, v in rps.items()}
        if not r:
            return
        print("D. WSGI throughput: Flask under gunicorn (1 sync worker), wrk -t1 -c8 -d%ds on loopback"
              % args.wsgi_seconds)
        print("%-22s %14s %12s" % ("mode", "median req/s", "x untraced"))
        for m in ("untraced", "watch", "watch-windows", "exact"):
            print("%-22s %14.0f %12.3f" % (m, r[m], r[m] / r["untraced"]))
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("0")
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
