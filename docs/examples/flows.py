"""Flows, runnable: a chain, a fan-out/fan-in (chord) and a DAG with a shared step.

    REDIS_URL=redis://127.0.0.1:6380/0 python docs/examples/flows.py
"""

import asyncio
import os

from aiojobs_redis import Flow, Queue, Worker, chain, chord, current_job, task

PAGES = {"a": "to be or not to be", "b": "the rest is silence", "c": "brevity is the soul"}


@task(name="fetch_page")
async def fetch_page(name: str) -> str:
    return PAGES[name]


@task(name="count_words")
async def count_words(text: str) -> int:  # fed: the page fetched before it
    return len(text.split())


@task(name="total")
async def total(counts: list[int]) -> int:  # fed: every count, in order
    return sum(counts)


@task(name="summary")
async def summary() -> str:  # reads what it waited for itself
    deps = await current_job().dependencies()
    return ", ".join(f"{d.state}: {d.result!r}" for d in deps)


async def main() -> None:
    async with Queue.from_url(os.environ["REDIS_URL"], name="pipeline") as queue:
        worker = Worker(queue, tasks=[fetch_page, count_words, total, summary])
        running = asyncio.create_task(worker.run())  # usually its own process

        # a chain: each step gets the previous step's result as its first argument
        jobs = await queue.enqueue_flow(chain(fetch_page.call("a"), count_words.fed()))
        print("words on page a:", await jobs[-1].result(timeout=10))

        # fan-out/fan-in: the callback runs once, when every count is done
        counts = [count_words.call(text) for text in PAGES.values()]
        jobs = await queue.enqueue_flow(chord(counts, total.fed()))
        print("words on all pages:", await jobs[-1].result(timeout=10))

        # a DAG: two steps share one dependency; the last waits for both
        flow = Flow()
        page = flow.add(fetch_page.call("b"))
        words = flow.add(count_words.fed(), after=[page], feed="previous")
        flow.add(summary.call(), after=[page, (words, "continue")])
        jobs = await queue.enqueue_flow(flow)
        print("summary:", await jobs[-1].result(timeout=10))

        worker.stop()
        await running
        await queue.obliterate()


if __name__ == "__main__":
    asyncio.run(main())
