"""Fragmentation, not a leak: allocates a million small objects (and a few thousand malloc-sized
buffers), frees 90% of them, then idles while a little transient work runs. Resident memory
stays high (the allocators keep the free space); nothing grows. Prints "ready" once the
objects are freed. Usage: fragment.py"""
import gc
import time

objs = [("item", i, [i]) for i in range(1_000_000)]
bufs = [bytearray(2000 + i % 1000) for i in range(20_000)]
kept = objs[::10]
kept_bufs = bufs[::10]
del objs, bufs
gc.collect()
print("ready", flush=True)
while True:
    tmp = [str(i) for i in range(1000)]
    del tmp
    time.sleep(0.1)
