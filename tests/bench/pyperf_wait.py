"""Part P of bench.py: pyperf_wait.py READY GO DONE SCRIPT [ARGS...]

Creates READY once the interpreter is up, waits for the file GO (the driver attaches the tracer
meanwhile), runs SCRIPT as __main__ with ARGS (a pyperformance benchmark in pyperf's worker mode:
this one process measures), creates DONE and waits for GO to be removed (the driver stops the
tracer meanwhile, its target still alive), then exits."""
import os
import runpy
import sys
import time

ready, go, done, script = sys.argv[1:5]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.01)
sys.argv = [script] + sys.argv[5:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
runpy.run_path(script, run_name="__main__")
open(done, "w").close()
while os.path.exists(go):
    time.sleep(0.01)
