"""A Celery app on a real Redis broker (BROKER: redis://127.0.0.1:PORT/0), run by Celery's
prefork pool; LEAKS=cache: its task keeps every result in a module-level dict, never evicted
(the healthy twin, LEAKS empty, keeps the newest 100).

Worker: `python -m celery -A celery_app worker --pool prefork --concurrency 2` (from this
directory). Producer: `python celery_app.py send RATE SECONDS` sends RATE tasks a second.
"""

import os
import sys
import time
from collections import OrderedDict

from celery import Celery

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))
app = Celery("celery_app", broker=os.environ["BROKER"])
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
RESULTS = OrderedDict()


@app.task
def price_quote(n):
    quote = {"id": n, "lines": [n * 1.5] * 16, "currency": "EUR"}
    RESULTS[f"quote-{n}"] = quote  # CACHED HERE
    if "cache" not in LEAKS:
        while len(RESULTS) > 100:
            RESULTS.popitem(last=False)
    return n


def send(rate, seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        price_quote.delay(n)
        n += 1
        time.sleep(1.0 / rate)


if __name__ == "__main__" and sys.argv[1:2] == ["send"]:
    send(float(sys.argv[2]), float(sys.argv[3]))
