"""An asyncio service whose state lives in the locals of its tasks' coroutines, suspended
between messages (no thread runs them while the census reads them): a consumer task's dict of
strings that only grows, and its bounded list of recent items. Runs until killed.
Usage: async_worker.py READY_FILE
"""
import asyncio
import sys


async def consume(queue):
    sessions = {}
    recent = []
    while True:
        n = await queue.get()  # SUSPENDED
        sessions["session-%d" % n] = "user-%08d" % n
        recent.append(n)
        if len(recent) > 200:
            del recent[:100]


async def main(ready):
    queue = asyncio.Queue()
    worker = asyncio.ensure_future(consume(queue))
    open(ready, "w").close()
    n = 0
    while not worker.done():
        for _ in range(50):
            queue.put_nowait(n)
            n += 1
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
