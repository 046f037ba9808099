# A target that names things to attack the terminal and files of whoever traces it: its comm,
# a function, a source file, a module global and the files it opens (and leaks) carry ESC, BEL,
# newlines and ';'. tests/hostile.rs checks that none reaches tracer's outputs raw.
import ctypes
import sys
import time

ctypes.CDLL(None).prctl(15, b"py\x1b]0;PWNED\x07\ngrowing", 0, 0, 0)  # PR_SET_NAME
DIR = sys.argv[1]
SRC = """
def feed():
    HOLD.append(open(PATH, "w"))
    BIG.append(bytearray(65536))
"""
ns = {"HOLD": [], "BIG": [], "PATH": DIR + "/evil\x1b[31m;name\nforged growing line\x07.txt"}
exec(compile(SRC, DIR + "/file\x1b]0;TITLE\x07;with\nnewline.py", "exec"), ns)
feed = ns["feed"]
feed.__code__ = feed.__code__.replace(co_name="fn\x1b[2J;evil\nname")
globals()["CACHE\x1b[31m\nforged growing"] = cache = []
print("ready", flush=True)
while True:
    feed()
    cache.append(bytes(5000))
    time.sleep(0.05)
