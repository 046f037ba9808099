"""Writes the address of the C library's malloc in this process to FILE (decimal), prints
"ready", and sleeps. Usage: malloc_addr.py FILE"""
import ctypes
import sys
import time

addr = ctypes.cast(ctypes.CDLL(None).malloc, ctypes.c_void_p).value
with open(sys.argv[1], "w") as f:
    f.write(str(addr))
print("ready", flush=True)
while True:
    time.sleep(1)
