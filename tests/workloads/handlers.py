"""Grows a global of the standard library from the application: every `logging.Handler` adds a
weak reference to `logging._handlerList` (in `logging._addHandlerRef`), and the handlers made at
the line marked FED are kept. The census names `logging._handlerList` growing, used in logging;
the application's line that feeds it is the marked one. Runs until killed.
"""

import logging
import time

KEEP = []


def add_handler():
    KEEP.append(logging.NullHandler())  # FED


def main():
    while True:
        for _ in range(50):
            add_handler()
        time.sleep(0.01)


main()
