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
     process that allocates --scale small objects while traced, keeps them and idles; and on one
     that keeps an object from each of --stacks distinct Python stacks, checkpointed every second
     for --stacks-idle seconds; the tracer's peak RSS (VmHWM, from wait4), its RSS 20 s into the
     idle time and at its end (flat: bounded whatever the number of stacks), and the time from
     SIGINT to the reports and to its exit.
  P. pyperformance benchmarks (not in the default parts: --parts P; pyperformance and memray
     installed from PyPI into the venv, whose python runs them), each in a process of its own in
     pyperf's worker mode (the one process measures: --pyperf-warmups, --pyperf-values, loops
     calibrated once per benchmark untraced at --pyperf-min-time), started by pyperf_wait.py,
     which waits for the tracer to attach before the benchmark starts; under five conditions,
     interleaved (for each benchmark, for each repeat, one after the other): untraced, watch mode
     (the default: no allocator probe; --interval applies; its first census pass comes 1 s after
     attaching, inside the measurement: a worst case), exact mode (every allocation trapped,
     and the recycled objects too: 10x to 1000x+; so 1/--pyperf-exact-divisor of the loops, one
     value, no warmup, in the first repeat only, stopped after --pyperf-exact-timeout seconds
     with a lower bound reported), memray run, and PYTHONTRACEMALLOC=1; pyperf's time per loop
     (comparable whatever the loops), median of --pyperf-repeat runs, ratios to untraced per
     benchmark and their geometric mean per condition (watch mode's: at most 1.01x).
     Scripts that run several benchmarks (deepcopy, logging, xml_etree) give a row for each, one
     process each (--worker-task).
Usage: bench.py --tracer BIN --python PY --venv DIR [--parts ABCDSP]"""
import argparse
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def scale_run(args, workdir, n, script="hold.py", idle=3, extra=()):
    """Part S: returns (peak RSS in MiB, RSS in MiB 20 s into the idle time and at its end,
    seconds from SIGINT to the summary written, seconds from SIGINT to exit, seconds to
    allocate, the outstanding allocations the summary reports)."""
    go = os.path.join(workdir, "go")
    done = os.path.join(workdir, "done")
    for p in (go, done):
        if os.path.exists(p):
            os.remove(p)
    w = subprocess.Popen([args.python, os.path.join(HERE, "..", "workloads", script), go, done,
                          str(n)])
    try:
        time.sleep(0.5)
        out_dir = os.path.join(workdir, "out-scale")
        tracer = start_tracer([args.tracer, "record", "-p", str(w.pid), "-o", out_dir] + list(extra))
        t0 = time.monotonic()
        open(go, "w").close()
        while not os.path.exists(done):
            time.sleep(0.05)
        alloc_s = time.monotonic() - t0
        early = None
        idle_from = time.monotonic()
        while time.monotonic() - idle_from < idle:
            if early is None and time.monotonic() - idle_from >= min(20, idle):
                early = rss_mib(tracer.pid)
            time.sleep(0.2)
        late = rss_mib(tracer.pid)
        early = early if early is not None else late
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
        return usage.ru_maxrss / 1024.0, early, late, reports_s, exit_s, alloc_s, count
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


PYPERF_CONDITIONS = ("untraced", "watch", "exact", "memray", "tracemalloc")
PYPERF_DEFAULT = ("nbody,float,richards,deltablue,json_dumps,json_loads,pickle,unpickle,"
                  "pickle_pure_python,regex_v8,unpack_sequence,go,chaos,raytrace,fannkuch,"
                  "spectral_norm,nqueens,hexiom,pyflate,generators,coroutines,deepcopy,logging,"
                  "xml_etree")
# Run by the venv's python: the named benchmarks' scripts and options from pyperformance's
# manifest (as `pyperformance run` finds them).
PYPERF_RESOLVE = r'''
import json, sys
import pyperf, pyperformance
from pyperformance import _manifest
byname = {b.name: b for b in _manifest.load_manifest(None).benchmarks}
out = {"versions": "pyperformance %s, pyperf %s" % (pyperformance.__version__, pyperf.__version__),
       "benchmarks": {}, "unknown": [n for n in sys.argv[1:] if n not in byname],
       "known": sorted(byname)}
for name in sys.argv[1:]:
    if name in byname:
        b = byname[name]
        try:
            deps = [str(d) for d in (b._get_metadata_value("dependencies", None) or ())]
        except Exception:
            deps = []
        out["benchmarks"][name] = {"script": b.runscript, "opts": list(b.extra_opts or ()),
                                   "deps": deps}
json.dump(out, sys.stdout)
'''


def ensure_pyperformance(args):
    """Part P: pyperformance (with pyperf) and memray from PyPI, in the venv of the benchmarked
    interpreter; returns the venv's python, which runs the benchmarks."""
    py = os.path.join(args.venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([args.python, "-m", "venv", args.venv], check=True)
    if subprocess.run([py, "-c", "import pyperformance, pyperf, memray"],
                      capture_output=True).returncode:
        subprocess.run([os.path.join(args.venv, "bin", "pip"), "install", "-q", "pyperformance",
                        "memray"], check=True)
    return py


def pyperf_resolve(args, py, names):
    """{name: {script, opts}} for the benchmarks that exist and whose extra packages (beyond
    pyperf) install into the venv; the others are skipped, said on stderr."""
    r = subprocess.run([py, "-c", PYPERF_RESOLVE] + names, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit("P: pyperformance's manifest could not be read: " + r.stderr[-2000:])
    m = json.loads(r.stdout)
    if m["unknown"]:
        raise SystemExit("P: no such pyperformance benchmark: %s (known: %s)"
                         % (", ".join(m["unknown"]), ", ".join(m["known"])))
    benches = {}
    for name in names:
        b = m["benchmarks"][name]
        deps = [d for d in b["deps"] if re.split(r"[<>=!~; \[]", d)[0].lower() != "pyperf"]
        if deps and subprocess.run([os.path.join(args.venv, "bin", "pip"), "install", "-q"] + deps,
                                   stdout=subprocess.DEVNULL).returncode:
            print("P: %s skipped: its requirements %s did not install" % (name, deps),
                  file=sys.stderr)
            continue
        benches[name] = b
    return m["versions"], benches


def pyperf_read(path):
    """The benchmarks of a pyperf JSON file, in the order the script ran them: (name, loops
    calibrated or used, mean of the values in seconds per loop or None)."""
    with open(path) as f:
        d = json.load(f)
    out = []
    for b in d["benchmarks"]:
        md = dict(d.get("metadata", {}))
        md.update(b.get("metadata", {}))
        values = []
        for run in b["runs"]:
            md.update(run.get("metadata", {}))
            values += run.get("values", [])
        out.append((md.get("name"), md.get("calibrate_loops") or md.get("loops"),
                    statistics.mean(values) if values else None))
    return out


def pyperf_tracer(cmd):
    """Starts `tracer record` (--force) and returns it once it records, with the list its stderr
    is read into (its pipes are read by threads, so that it never blocks on a full one), or
    raises RuntimeError with what it said."""
    tracer = subprocess.Popen(cmd + ["--force"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    err = []
    while True:
        line = tracer.stderr.readline()
        if not line:
            tracer.wait()
            raise RuntimeError("tracer exited early (%s): %s" % (tracer.returncode,
                                                                 "".join(err)[-1500:]))
        err.append(line)
        if "tracer: recording" in line:
            break
    tracer.readers = []
    for pipe, buf in ((tracer.stdout, []), (tracer.stderr, err)):
        t = threading.Thread(target=lambda p=pipe, b=buf: b.extend(iter(p.readline, "")),
                             daemon=True)
        t.start()
        tracer.readers.append(t)
    return tracer, err


class PyperfTimeout(RuntimeError):
    def __init__(self, seconds):
        RuntimeError.__init__(self, "timed out %.0f s after the start" % seconds)
        self.seconds = seconds


def pyperf_run(args, py, b, cond, workdir, task, loops, warmups=None, values=None, timeout=None):
    """One process runs one pyperformance benchmark in pyperf's worker mode (`task`: its
    --worker-task, for scripts that run several) under `cond`; the tracer attaches before the
    benchmark starts and is stopped (SIGINT) after it measured, its target still alive.
    loops=None calibrates the loops instead (untraced). Returns pyperf_read's list; raises
    PyperfTimeout past `timeout` seconds from the benchmark's start (the process is killed),
    RuntimeError when the benchmark or the tracer fails."""
    ready, go, done, result, log = [os.path.join(workdir, "p-" + n) for n in
                                    ("ready", "go", "done", "result.json", "log")]
    for p in (ready, go, done, result):
        if os.path.exists(p):
            os.remove(p)
    opts = list(b["opts"]) + ["--worker", "-o", result]
    if loops is None:
        opts += ["--calibrate-loops", "--min-time", str(args.pyperf_min_time)]
    else:
        opts += ["-l", str(loops), "-w", str(args.pyperf_warmups if warmups is None else warmups),
                 "-n", str(values or args.pyperf_values)]
    if task is not None:
        opts += ["--worker-task", str(task)]
    wrapped = [os.path.join(HERE, "pyperf_wait.py"), ready, go, done, b["script"]] + opts
    env = dict(os.environ)
    env.pop("PYTHONTRACEMALLOC", None)
    memray_out = os.path.join(workdir, "p-memray.bin")
    if cond == "memray":
        cmd = [os.path.join(args.venv, "bin", "memray"), "run", "-f", "-q", "-o", memray_out] + wrapped
    else:
        cmd = [py] + wrapped
    if cond == "tracemalloc":
        env["PYTHONTRACEMALLOC"] = "1"
    traced = cond in ("watch", "exact")
    if not traced:
        open(go, "w").close()  # no wait: start-up is not in pyperf's values anyway
    tracer = None
    with open(log, "w") as logf:
        w = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
    try:
        started = time.monotonic()
        if traced:
            while not os.path.exists(ready):
                if w.poll() is not None:
                    break
                time.sleep(0.01)
            else:
                tcmd = [args.tracer, "record", "-p", str(w.pid), "-o",
                        os.path.join(workdir, "p-out-" + cond)]
                if cond == "watch":
                    tcmd += ["--mode", "watch"]
                    if args.interval:
                        tcmd += ["--interval", args.interval]
                tracer, terr = pyperf_tracer(tcmd)
                started = time.monotonic()
                open(go, "w").close()
        timeout = timeout or args.pyperf_timeout
        while not os.path.exists(done) and w.poll() is None:
            if time.monotonic() - started > timeout:
                raise PyperfTimeout(time.monotonic() - started)
            time.sleep(0.05)
        if tracer:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=600)
            for t in tracer.readers:
                t.join(timeout=10)
        if os.path.exists(go):
            os.remove(go)
        w.wait(timeout=60)
        with open(log) as f:
            said = f.read()[-2000:]
        if w.returncode or not os.path.exists(result):
            raise RuntimeError("the benchmark failed (exit %s): %s" % (w.returncode, said))
        if tracer and tracer.returncode:
            raise RuntimeError("tracer failed (exit %s): %s" % (tracer.returncode,
                                                                "".join(terr)[-1500:]))
        return pyperf_read(result)
    finally:
        if tracer and tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)  # its reports written, then it is gone
            try:
                tracer.wait(timeout=120)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
        if w.poll() is None:
            w.kill()
            w.wait()
        if os.path.exists(memray_out):
            os.remove(memray_out)


def fmt_ratio(r):
    return "%.3fx" % r if r < 100 else "%.0fx" % r


def fmt_time(s):
    for unit, k in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= k:
            return "%.3g %s" % (s / k, unit)
    return "%.3g ns" % (s / 1e-9)


def pyperf_part(args, workdir):
    """Part P: measures, prints the table and returns the geometric mean ratios."""
    py = ensure_pyperformance(args)
    names = [n.strip() for n in args.pyperf_benchmarks.split(",") if n.strip()]
    conds = [c.strip() for c in args.pyperf_conditions.split(",") if c.strip()]
    bad = [c for c in conds if c not in PYPERF_CONDITIONS]
    if bad or not conds or conds[0] != "untraced":
        raise SystemExit("P: --pyperf-conditions: untraced first, then any of %s"
                         % ", ".join(PYPERF_CONDITIONS[1:]))
    versions, benches = pyperf_resolve(args, py, names)
    reps = args.pyperf_repeat or args.repeat
    rows = []  # (benchmark name, loops, exact loops, {cond: [time per loop]}, {cond: [bound]})
    failures = []
    for name, b in benches.items():
        try:
            cal = pyperf_run(args, py, b, "untraced", workdir, None, None)
        except RuntimeError as e:
            failures.append("%s: calibration: %s" % (name, e))
            print("P: %s skipped: %s" % (name, e), file=sys.stderr, flush=True)
            continue
        tasks = [(None, cal[0])] if len(cal) == 1 else list(enumerate(cal))
        for task, (bname, loops, _) in tasks:
            loops = int(loops or 1)
            exact_loops = max(1, loops // args.pyperf_exact_divisor)
            times, bounds = {}, {}
            for rep in range(reps):
                for cond in conds:
                    if cond == "exact" and rep >= args.pyperf_exact_repeat:
                        continue
                    run = {"loops": loops}
                    if cond == "exact":
                        run = {"loops": exact_loops, "warmups": args.pyperf_exact_warmups,
                               "values": args.pyperf_exact_values,
                               "timeout": args.pyperf_exact_timeout}
                    try:
                        t = pyperf_run(args, py, b, cond, workdir, task, **run)[0][2]
                    except PyperfTimeout as e:
                        # At least this long per loop (its start-up counted in: an estimate).
                        n = run["loops"] * (run.get("warmups", args.pyperf_warmups)
                                            + run.get("values", args.pyperf_values))
                        bounds.setdefault(cond, []).append(e.seconds / n)
                        failures.append("%s, %s, repeat %d: %s" % (bname, cond, rep + 1, e))
                        print("P: %s, repeat %d: %s %s" % (bname, rep + 1, cond, e),
                              file=sys.stderr, flush=True)
                        continue
                    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError,
                            IndexError, KeyError) as e:
                        failures.append("%s, %s, repeat %d: %s" % (bname, cond, rep + 1, e))
                        print("P: %s, repeat %d: %s failed: %s" % (bname, rep + 1, cond, e),
                              file=sys.stderr, flush=True)
                        continue
                    times.setdefault(cond, []).append(t)
                    print("P: %s, repeat %d/%d: %s %s per loop" % (bname, rep + 1, reps, cond,
                                                                    fmt_time(t)),
                          file=sys.stderr, flush=True)
            rows.append((bname, loops, exact_loops, times, bounds))
    print("P. pyperformance benchmarks (%s), each run by one process of %s in pyperf's worker "
          "mode (warmups: %d, values: %d, loops calibrated once untraced at --min-time %s; exact "
          "mode: warmups: %d, values: %d, 1/%d of the loops, in the first %d repeat(s), stopped "
          "after %d s; watch mode: %s), the tracer attached before the benchmark starts; time per "
          "loop, median of %d runs, conditions interleaved" % (
              versions, py, args.pyperf_warmups, args.pyperf_values, args.pyperf_min_time,
              args.pyperf_exact_warmups, args.pyperf_exact_values, args.pyperf_exact_divisor,
              args.pyperf_exact_repeat, args.pyperf_exact_timeout,
              "--interval " + args.interval if args.interval else "the default interval", reps))
    print("%-24s %11s" % ("benchmark", "loops/exact") + "".join("  %18s" % c for c in conds))
    ratios = {c: [] for c in conds}
    at_least = set()
    for bname, loops, exact_loops, times, bounds in rows:
        med = {c: statistics.median(v) for c, v in times.items()}
        cells = []
        for c in conds:
            if c in med:
                t, more = med[c], ""
            elif c in bounds:
                t, more = max(bounds[c]), ">"
            else:
                cells.append("  %18s" % "failed")
                continue
            if c == "untraced" or "untraced" not in med:
                cells.append("  %18s" % (more + fmt_time(t)))
                continue
            ratios[c].append(t / med["untraced"])
            if more:
                at_least.add(c)
            cells.append("  %10s %7s" % (more + fmt_time(t), more + fmt_ratio(ratios[c][-1])))
        print("%-24s %11s" % (bname, "%d/%d" % (loops, exact_loops)) + "".join(cells))
    geo = {c: math.exp(statistics.mean(math.log(r) for r in ratios[c]))
           for c in conds[1:] if ratios[c]}
    print("%-24s %11s %18s" % ("geometric mean", "", "") + "".join(
        "  %18s" % ("%s%s (%d)" % (">" if c in at_least else "", fmt_ratio(geo[c]), len(ratios[c]))
                    if c in geo else "-") for c in conds[1:]))
    if at_least:
        print("'>': stopped after --pyperf-exact-timeout; a lower bound (the time since the "
              "benchmark's start over its loops)")
    if "watch" in geo:
        print("watch mode over %d benchmarks: %.3fx untraced (target: at most 1.01x): %s"
              % (len(ratios["watch"]), geo["watch"], "ok" if geo["watch"] <= 1.01 else "OVER"))
    for f in failures:
        print("failed: " + f)
    print()
    return geo


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
    ap.add_argument("--parts", default="ABCD", help="which parts to run (S: resources at scale, "
                    "P: pyperformance)")
    ap.add_argument("--scale", type=int, default=1000000, help="part S: outstanding allocations")
    ap.add_argument("--stacks", type=int, default=20000, help="part S: distinct stacks held")
    ap.add_argument("--stacks-idle", type=int, default=80, help="part S: seconds of checkpoints "
                    "over the distinct stacks")
    ap.add_argument("--pyperf-benchmarks", default=PYPERF_DEFAULT,
                    help="part P: pyperformance benchmarks, comma-separated (names as in "
                    "`pyperformance list`)")
    ap.add_argument("--pyperf-repeat", type=int, help="part P: runs of each benchmark under "
                    "each condition (default: --repeat)")
    ap.add_argument("--pyperf-conditions", default=",".join(PYPERF_CONDITIONS),
                    help="part P: untraced, then any of watch, exact, memray, tracemalloc")
    ap.add_argument("--pyperf-values", type=int, default=5, help="part P: pyperf's values per "
                    "process")
    ap.add_argument("--pyperf-warmups", type=int, default=1, help="part P: pyperf's warmups per "
                    "process")
    ap.add_argument("--pyperf-min-time", type=float, default=0.4, help="part P: seconds a value "
                    "takes at least, for the loops calibrated untraced")
    ap.add_argument("--pyperf-exact-divisor", type=int, default=10, help="part P: exact mode "
                    "runs this many times fewer loops per value")
    ap.add_argument("--pyperf-exact-values", type=int, default=1, help="part P: exact mode's "
                    "values per process")
    ap.add_argument("--pyperf-exact-warmups", type=int, default=0, help="part P: exact mode's "
                    "warmups per process")
    ap.add_argument("--pyperf-exact-repeat", type=int, default=1, help="part P: exact mode runs "
                    "in this many first repeats only (its cost: 10x to 1000x+)")
    ap.add_argument("--pyperf-exact-timeout", type=int, default=120, help="part P: exact mode's "
                    "process is stopped after this many seconds (a lower bound is reported)")
    ap.add_argument("--pyperf-timeout", type=int, default=900, help="part P: seconds one "
                    "benchmark process may take (other conditions)")
    args = ap.parse_args()
    if args.parts.strip("SP") or not args.parts:
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
        if args.parts.strip("SP"):
            print("loop: iterations of (250-byte string kept, small dict, json.dumps of 50 "
                  "strings), 10 Python frames deep, %s; median of %d runs\n"
                  % (args.python, args.repeat))
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
        if args.parts.strip("SP"):
            print()
        if "B" in args.parts:
            table("B. the issue's loop, 20000 iterations", med["B"],
                  ("untraced", "watch", "watch-windows", "watch-windows-between", "tracemalloc-1",
                   "tracemalloc-25", "memray"))
        if "C" in args.parts:
            table("C. long loop, %d iterations" % args.long, med["C"],
                  ("untraced", "watch", "watch-nocpu", "watch-windows"))
        if "S" in args.parts:
            print("S. exact mode, the tracer's own resources: a process keeping %d small objects "
                  "allocated (one stack), then idle, SIGINT 3 s later; and one keeping an object from "
                  "each of %d distinct Python stacks, idle for %d s with a checkpoint every second"
                  % (args.scale, args.stacks, args.stacks_idle))
            print("%-8s %4s %10s %12s %11s %14s %12s %10s %13s" % (
                "workload", "run", "peak MiB", "MiB at 20 s", "MiB at end", "SIGINT->reports",
                "SIGINT->exit", "alloc s", "allocations"))
            runs = [("objects", lambda: scale_run(args, workdir, args.scale)),
                    ("stacks", lambda: scale_run(args, workdir, args.stacks, "stacks.py",
                                                 args.stacks_idle, ["--interval", "1s"]))]
            for name, run in runs:
                for rep in range(args.repeat):
                    peak, early, late, reports_s, exit_s, alloc_s, count = run()
                    print("%-8s %4d %10.1f %12.1f %11.1f %14s %12.2f %10.1f %13s" % (
                        name, rep + 1, peak, early, late,
                        "%.2f" % reports_s if reports_s is not None else "?", exit_s, alloc_s, count),
                        flush=True)
            print()
        if "P" in args.parts:
            pyperf_part(args, workdir)
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
