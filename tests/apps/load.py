"""A bounded local client: requests PATHS (comma-separated, `{n}` replaced by a counter) on
127.0.0.1:PORT at RATE requests per second, for SECONDS (or until killed).

Usage: load.py PORT RATE SECONDS PATH[,PATH...]
"""

import sys
import time
import urllib.request


def main():
    port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    paths = sys.argv[4].split(",")
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        t0 = time.monotonic()
        for p in paths:
            url = f"http://127.0.0.1:{port}" + p.replace("{n}", str(n))
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    r.read()
            except OSError:
                pass
        n += 1
        time.sleep(max(0.0, 1.0 / rate - (time.monotonic() - t0)))


if __name__ == "__main__":
    main()
