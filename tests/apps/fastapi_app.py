"""A FastAPI service under uvicorn with the leaks async services really have, chosen by LEAKS
(comma-separated); with LEAKS empty it is the healthy twin of each.

- sessions: a record per login kept in `app.state.sessions[token]` and never expired (healthy:
  the newest 50 are kept).
- tasks: a background task per request kept in a module-level set; the task waits for an
  event that is never set (healthy: it ends and removes itself, the documented pattern).
- orphans: a task per request never awaited nor kept; it waits on a shared event, whose
  waiters keep it alive (healthy: it ends after a short sleep).

TASKS_LOG, when set, is a file the app appends `SECONDS_SINCE_START len(asyncio.all_tasks())`
to twice a second (the tests compare tracer's counts with it).

Run: `python fastapi_app.py PORT`.
"""

import asyncio
import os
import sys
import time
from collections import OrderedDict

import uvicorn
from fastapi import FastAPI, Request

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))
app = FastAPI()
background_tasks = set()
started = time.monotonic()


@app.on_event("startup")
async def setup():
    app.state.sessions = OrderedDict()
    app.state.shutdown = asyncio.Event()
    if os.environ.get("TASKS_LOG"):
        app.state.logger = asyncio.create_task(log_tasks(os.environ["TASKS_LOG"]))


async def log_tasks(path):
    while True:
        with open(path, "a") as f:
            f.write(f"{time.monotonic() - started:.2f} {len(asyncio.all_tasks())}\n")
        await asyncio.sleep(0.5)


@app.get("/login/{n}")
async def login(n: int, request: Request):
    token = f"tok-{n:08d}"
    request.app.state.sessions[token] = {"uid": n, "scopes": ["read", "write"], "history": [n] * 20}
    if "sessions" not in LEAKS:
        while len(request.app.state.sessions) > 50:
            request.app.state.sessions.popitem(last=False)
    return {"token": token}


async def watch_session(n):
    if "tasks" in LEAKS:
        await app.state.shutdown.wait()  # TASK WAITS
    else:
        await asyncio.sleep(0.05)
    return n


@app.get("/spawn/{n}")
async def spawn(n: int):
    task = asyncio.create_task(watch_session(n))
    background_tasks.add(task)
    if "tasks" not in LEAKS:
        task.add_done_callback(background_tasks.discard)
    return {"n": n}


async def refresh_cache(n):
    if "orphans" in LEAKS:
        await app.state.shutdown.wait()  # ORPHAN WAITS
    else:
        await asyncio.sleep(0.05)


@app.get("/refresh/{n}")
async def refresh(n: int):
    asyncio.ensure_future(refresh_cache(n))
    return {"n": n}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
