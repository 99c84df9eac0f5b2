"""``aiojobs-redis dashboard``: serve the HTTP API and the dashboard with uvicorn.

Bound to 127.0.0.1 by default; binding anywhere else needs ``--token`` or
``--read-only``. A request that comes in on a loopback address must name a loopback
host in its Host header, or one given with ``--allowed-host`` (a DNS-rebinding page
cannot reach the API). With a token, open the page as http://HOST:PORT/#token=TOKEN:
the part after '#' never leaves the browser, so the token is in no access log.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
from typing import Any

from .common import add_url_option, plain, redis_url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def add_parser(subparsers: Any) -> None:
    """Add the ``dashboard`` command to ``aiojobs-redis`` (an argparse subparsers object)."""
    p = subparsers.add_parser(
        "dashboard", help="serve the HTTP API, Prometheus /metrics and the live dashboard"
                          " (needs the web extra)",
        description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url_option(p)
    p.add_argument("--queue", action="append", required=True, metavar="NAME",
                   help="a queue to show (repeat for several)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=os.environ.get("AJR_DASHBOARD_TOKEN"),
                   help="bearer token required on every request (default:"
                        " $AJR_DASHBOARD_TOKEN); open the page as .../#token=TOKEN")
    p.add_argument("--read-only", action="store_true",
                   help="refuse every change (retry, remove, promote, pause, ...)")
    p.add_argument("--allowed-host", action="append", metavar="NAME",
                   help="a Host name to answer to besides the loopback names, e.g. behind"
                        " a reverse proxy (repeat for several); then no other is accepted")
    p.set_defaults(func=run_dashboard)


def check_binding(host: str, token: str | None, read_only: bool) -> None:
    if not is_loopback(host) and not token and not read_only:
        raise SystemExit(
            f"refusing to serve the dashboard on {host}: anyone who reaches it could retry,"
            " remove and pause jobs. Give --token (or $AJR_DASHBOARD_TOKEN) or --read-only,"
            " or bind to 127.0.0.1"
        )


_TOKEN_IN_QUERY = re.compile(r"(?i)((?:^|[?&;])(?:token|access_token)=)[^&;#\s]*")


def redact_tokens(record: logging.LogRecord) -> bool:
    """An access-log filter: ``token=...`` in a logged path becomes ``token=[redacted]``."""
    if isinstance(record.args, tuple):
        record.args = tuple(_TOKEN_IN_QUERY.sub(r"\1[redacted]", a) if isinstance(a, str)
                            else a for a in record.args)
    elif isinstance(record.msg, str):
        record.msg = _TOKEN_IN_QUERY.sub(r"\1[redacted]", record.msg)
    return True


async def run_dashboard(args: argparse.Namespace) -> int:
    from ..producer.queue import Queue

    try:
        import uvicorn

        from ..ops.web import create_app
    except ImportError as e:
        raise SystemExit(f"the dashboard needs the web extra ({e.name or e} is not installed):"
                         " pip install 'aiojobs_redis[web]'") from e
    url = redis_url(args)
    check_binding(args.host, args.token, args.read_only)
    queues = [Queue.from_url(url, name=name) for name in dict.fromkeys(args.queue)]
    try:
        token = args.token or None
        # on the loopback without a token or --read-only (check_binding refuses that
        # anywhere else), the Host check of the app is the protection
        app = create_app(queues, token=token, read_only=args.read_only,
                         insecure_open=token is None and not args.read_only,
                         allowed_hosts=getattr(args, "allowed_host", None))
        config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info",
                                lifespan="off", server_header=False)
        host = f"[{args.host}]" if ":" in args.host and args.host[0] != "[" else args.host
        # never the token itself: this line lands in logs
        print(f"aiojobs-redis dashboard on http://{host}:{args.port}/"
              + ("#token=<your token>" if token else "")
              + (" (read-only)" if args.read_only else ""), flush=True)
        # a token sent in a query string (an old bookmark: the app refuses it) must not
        # reach the access log either, which logs the request line before the app answers
        access = logging.getLogger("uvicorn.access")
        access.addFilter(redact_tokens)
        try:
            await uvicorn.Server(config).serve()
        finally:
            access.removeFilter(redact_tokens)
    finally:
        for q in queues:
            await q.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command on its own: ``python -m aiojobs_redis.cli.dashboard --queue q``."""
    from .main import main as cli_main

    return cli_main(["dashboard", *(argv if argv is not None else _argv())])


def _argv() -> list[str]:
    import sys

    return sys.argv[1:]


if __name__ == "__main__":
    raise SystemExit(main())
