"""The README's example, runnable: a task, a producer call, a worker, a result.

    REDIS_URL=redis://127.0.0.1:6380/0 python docs/examples/quickstart.py
"""

import asyncio
import os

from aiojobs_redis import ExponentialBackoff, JobOptions, Queue, Worker, current_job, task


@task(name="send_digest", attempts=3, backoff=ExponentialBackoff(base_s=1, max_s=30))
async def send_digest(user: str, unread: int) -> str:
    ctx = current_job()  # id, attempt, progress
    await ctx.progress({"step": "rendering"})
    return f"hello {user}, you have {unread} new messages"


async def main() -> None:
    async with Queue.from_url(os.environ["REDIS_URL"], name="digests") as queue:
        worker = Worker(queue, tasks=[send_digest], concurrency=50)
        running = asyncio.create_task(worker.run())  # usually its own process

        job = await queue.enqueue(send_digest, "ann", unread=3)  # arguments are type-checked
        print(await job.result(timeout=10))

        later = await queue.enqueue("send_digest", "bob", unread=1,  # by name, with options
                                    options=JobOptions(delay_s=0.5, job_id="digest:bob"))
        print(await later.result(timeout=10))

        worker.stop()
        await running
        await queue.obliterate()


if __name__ == "__main__":
    asyncio.run(main())
