"""Memory taken from libc's malloc directly, as a C extension would (ctypes here): 24 KiB every
10 ms from the brk heap, and 512 KiB every 200 ms mapped on their own; written to, never
freed. Prints "ready". Usage: native_leak.py"""
import ctypes, sys, time
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = (ctypes.c_size_t,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
print("ready", flush=True)
def native_leak():
    p = libc.malloc(24 * 1024)
    libc.memset(p, 1, 24 * 1024)
def big_leak():
    p = libc.malloc(512 * 1024)
    libc.memset(p, 1, 512 * 1024)
i = 0
while True:
    native_leak()
    if i % 20 == 0:
        big_leak()
    i += 1
    time.sleep(0.01)
