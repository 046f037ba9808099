"""A Flask service that computes a frame of samples per request with numpy (from PyPI) and, with
LEAKS=frames, keeps every one in a module-level list (a "recent frames" cache never trimmed):
64 KiB of array data per request, in malloc's heap, behind a ~100 B Python object. With LEAKS
empty it serves the same route and keeps nothing. Run under gunicorn (`gunicorn -w 1
numpy_app:app`) or alone (`python numpy_app.py PORT`).
"""

import os
import sys

import numpy as np
from flask import Flask, jsonify

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))

app = Flask(__name__)
RECENT_FRAMES = []


@app.route("/frame/<int:n>")
def frame(n):
    samples = np.sin(np.arange(8192, dtype=np.float64) * (n % 97))
    if "frames" in LEAKS:
        RECENT_FRAMES.append(samples)
    return jsonify(n=n, peak=float(samples.max()))


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
