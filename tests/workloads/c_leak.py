"""Leaks memory the interpreter does not know about, as a C extension would: buffers from libc's
malloc, written to, never freed (2.5 MiB/s). Usage: c_leak.py READY_FILE"""
import ctypes
import sys
import time

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)

open(sys.argv[1], "w").close()
while True:
    p = libc.malloc(256 * 1024)
    libc.memset(p, 1, 256 * 1024)
    time.sleep(0.1)
