"""A one-file Django service with SQLAlchemy, with the leaks such services really have, chosen by
LEAKS (comma-separated); with LEAKS empty it is the healthy twin of each.

- signals: a receiver connected to `request_finished` per request with `weak=False` (a closure
  over the request's data): Django's signal keeps every one (healthy: one module-level receiver,
  connected once by its `dispatch_uid`).
- sessions: an SQLAlchemy engine created per request, and its session kept open in a module-level
  list (the connection stays checked out, its database file open). Healthy: one engine for the
  process (as SQLAlchemy documents), each request's session closed. (An engine per request whose
  session is closed is not a leak either: the gc takes each engine's reference cycle, with its
  pooled connection, at a full collection; until then its objects and files count, see README.)

Run: `python django_app.py PORT` (wsgiref's server, one request at a time).
"""

import os
import sys
import tempfile

import django
from django.conf import settings

LEAKS = set(filter(None, os.environ.get("LEAKS", "").split(",")))
settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="tracer-tests",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.signals import request_finished  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

DB = os.path.join(tempfile.mkdtemp(prefix="tracer-django-"), "orders.db")
OPEN_SESSIONS = []


def audit(sender, **kwargs):
    return None


def order(request, n):
    if "signals" in LEAKS:
        payload = {"order": n, "lines": list(range(8))}

        def log_order(sender, **kwargs):
            return payload

        request_finished.connect(log_order, weak=False)  # CONNECTED HERE
    else:
        request_finished.connect(audit, dispatch_uid="audit")
    return JsonResponse({"order": n})


ENGINE = create_engine(f"sqlite:///{DB}")


def report(request, n):
    engine = create_engine(f"sqlite:///{DB}") if "sessions" in LEAKS else ENGINE
    session = Session(engine)
    total = session.execute(text("select :n"), {"n": n}).scalar()
    if "sessions" in LEAKS:
        OPEN_SESSIONS.append(session)  # KEPT HERE
    else:
        session.close()
    return JsonResponse({"total": total})


urlpatterns = [path("order/<int:n>", order), path("report/<int:n>", report)]


if __name__ == "__main__":
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from django.core.wsgi import get_wsgi_application

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    make_server("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), handler_class=Quiet).serve_forever()
