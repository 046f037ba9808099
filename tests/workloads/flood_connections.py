# An unprivileged local user flooding a TCP port: opens connections (never sending a request)
# as fast as it can and keeps them, reconnecting those the server drops, for a while. Prints
# how many it held at most. Args: PORT SECONDS.
import resource
import socket
import sys
import time

port, seconds = int(sys.argv[1]), float(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, most, refused = [], 0, 0
end = time.time() + seconds
while time.time() < end:
    try:
        s = socket.socket()
        s.settimeout(0.2)
        s.connect(("127.0.0.1", port))
        held.append(s)
        most = max(most, len(held))
    except OSError:
        refused += 1
        s.close()
        time.sleep(0.01)
    if len(held) >= 3000:
        held.pop(0).close()
print(f"held {most} refused {refused}", flush=True)
