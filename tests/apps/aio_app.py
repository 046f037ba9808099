"""An aiohttp service that keeps every background task in a global set and never discards it
(LEAKS=tasks); with LEAKS empty, each task removes itself when done (the documented pattern).

Run: `python aio_app.py PORT`.
"""

import asyncio
import os
import sys

from aiohttp import web

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))
background_tasks = set()


async def audit(n):
    await asyncio.sleep(0)
    return {"event": n, "payload": "x" * 32}


async def handle(request):
    n = int(request.match_info["n"])
    task = asyncio.ensure_future(audit(n))
    background_tasks.add(task)
    if "tasks" not in LEAKS:
        task.add_done_callback(background_tasks.discard)
    return web.json_response({"n": n})


def main():
    app = web.Application()
    app.router.add_get("/event/{n}", handle)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
