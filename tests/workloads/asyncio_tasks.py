"""An asyncio service that starts a task per "request" (RATE a second): with `set`, each task is
kept in a module-level set and waits for an event that is never set (tasks piling up, the
classic); with `orphan`, each is never awaited nor kept, and waits on the same event (whose
waiters keep it alive); with `awaited`, each is awaited by a parent task kept in the set; with
`healthy`, each task ends after a short sleep and leaves the set.
Every quarter second it appends `WALL_CLOCK len(asyncio.all_tasks())` to LOG (its own count, to
check tracer's against). Prints "ready", runs until killed.
Usage: asyncio_tasks.py MODE RATE LOG
"""
import asyncio
import sys
import time

background = set()


async def hold_session(n, forever):
    await forever.wait()  # SET WAITS HERE
    return n


async def refresh_cache(n, forever):
    await forever.wait()  # ORPHAN WAITS HERE
    return n


async def parent(n, forever):
    child = asyncio.ensure_future(hold_session(n, forever))
    return await child  # PARENT WAITS HERE


async def short_job(n):
    await asyncio.sleep(0.05)
    return n


async def count_tasks(log):
    while True:
        with open(log, "a") as f:
            f.write(f"{time.time():.3f} {len(asyncio.all_tasks())}\n")
        await asyncio.sleep(0.25)


async def main(mode, rate, log):
    forever = asyncio.Event()
    counter = asyncio.ensure_future(count_tasks(log))
    print("ready", flush=True)
    n = 0
    while not counter.done():
        if mode == "set":
            background.add(asyncio.ensure_future(hold_session(n, forever)))
        elif mode == "awaited":
            background.add(asyncio.ensure_future(parent(n, forever)))
        elif mode == "orphan":
            asyncio.ensure_future(refresh_cache(n, forever))
        else:
            task = asyncio.ensure_future(short_job(n))
            background.add(task)
            task.add_done_callback(background.discard)
        n += 1
        await asyncio.sleep(1.0 / rate)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2]), sys.argv[3]))
