"""The HTTP API and live dashboard (``pip install aiojobs_redis[web]``).

``create_app(queues=[...])`` returns an ASGI app; mount it in FastAPI or Starlette
with ``app.mount("/jobs", create_app(queues=[q]))``, or run ``aiojobs-redis dashboard``.
"""

from .app import create_app

__all__ = ("create_app",)
