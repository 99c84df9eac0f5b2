"""The HTTP API and live dashboard (``pip install aiojobs_redis[web]``).

``create_app(queues=[...], token=...)`` returns an ASGI app; mount it in FastAPI or
Starlette with ``app.mount("/jobs", create_app(queues=[q], token=...))``, or run
``aiojobs-redis dashboard``. ``create_app`` needs to be told who may use the app:
``token=``, ``auth=``, ``read_only=True`` or ``insecure_open=True`` (see ``safety.py``).
"""

from .app import create_app

__all__ = ("create_app",)
