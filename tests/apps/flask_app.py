"""A Flask service with the leaks people really hit, chosen by LEAKS (comma-separated):

- logger: a logger per user (`logging.getLogger(f"user-{uid}")`), kept for ever by logging's manager;
- lru: an unbounded `functools.lru_cache` on a method, called with fresh arguments per request;
- fd: a thread pool writes a temporary file per request and never closes its descriptor.

With LEAKS empty it serves the same routes without keeping anything: nothing may be reported growing.
Run under gunicorn (`gunicorn -w 1 flask_app:app`) or alone (`python flask_app.py PORT`).
"""

import functools
import logging
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

from flask import Flask, jsonify

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))

app = Flask(__name__)
pool = ThreadPoolExecutor(max_workers=2)
logging.basicConfig(level=logging.WARNING)


def user_logger(uid):
    if "logger" in LEAKS:
        return logging.getLogger(f"user-{uid}")
    return logging.getLogger("user")


class PriceService:
    def __init__(self, item):
        self.item = item
        self.history = [item] * 8

    @functools.lru_cache(maxsize=None)
    def quote(self, qty):
        return len(self.item) * qty


def price(item, qty):
    service = PriceService(item)
    if "lru" in LEAKS:
        return service.quote(qty)
    return len(service.item) * qty


def spool(payload):
    fd, path = tempfile.mkstemp(prefix="spool-")
    os.write(fd, payload)
    if "fd" not in LEAKS:
        os.close(fd)
    os.unlink(path)
    return len(payload)


@app.route("/user/<int:uid>")
def user(uid):
    log = user_logger(uid)
    log.debug("user %s", uid)
    return jsonify(uid=uid)


@app.route("/price/<item>/<int:qty>")
def quote(item, qty):
    return jsonify(price=price(item, qty))


@app.route("/upload/<int:n>")
def upload(n):
    size = pool.submit(spool, b"x" * (64 + n % 64)).result()
    return jsonify(size=size)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]))
