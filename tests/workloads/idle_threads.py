"""N idle threads (waiting on an event), and the main thread leaking a file every half second.
Prints "ready" once the threads run. Usage: idle_threads.py N"""
import sys
import threading
import time

ev = threading.Event()
threads = [threading.Thread(target=ev.wait, daemon=True) for _ in range(int(sys.argv[1]))]
for t in threads:
    t.start()
print("ready", flush=True)
held = []
while True:
    held.append(open("/dev/null"))
    time.sleep(0.5)
