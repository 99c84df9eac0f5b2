"""A producer process for the fault tests: enqueues chunks of jobs forever and writes
each acknowledged chunk's ids to a file (one id a line) after enqueue_many returned.

    python -m tests.faults.producer REDIS_URL QUEUE IDS_FILE
"""

from __future__ import annotations

import asyncio
import sys

from aiojobs_redis import Queue

from .app import work


async def main(url: str, queue_name: str, ids_file: str) -> None:
    async with Queue.from_url(url, name=queue_name) as queue:
        with open(ids_file, "a") as out:
            while True:
                jobs = await queue.enqueue_many([work.call(0.0) for _ in range(2000)])
                out.write("".join(f"{j.id}\n" for j in jobs))
                out.flush()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
