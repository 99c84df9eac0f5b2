"""Adapter subprocesses: one JSON object per line on stdin and stdout."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PEERS_DIR = Path(__file__).resolve().parent / "peers"


class AdapterError(Exception):
    """The adapter crashed, timed out, or said something we cannot read."""


@dataclass(frozen=True)
class Command:
    """How to start one library's adapter: argv prefix, environment additions."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


class AdapterProc:
    """One running adapter (producer or worker role)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path, label: str) -> None:
        self.proc = proc
        self.log = log
        self.label = label

    @classmethod
    async def spawn(cls, cmd: Command, role: str, config: dict[str, Any], log: Path,
                    label: str) -> AdapterProc:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # a peer's venv must not see our packages
        env.update(cmd.env)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as err:
            err.write(f"--- {label} {role} {json.dumps(config)}\n".encode())
            err.flush()
            proc = await asyncio.create_subprocess_exec(
                *cmd.argv, role, json.dumps(config),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=err, env=env, cwd=cmd.cwd, limit=64 * 1024 * 1024,
            )
        return cls(proc, log, label)

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise AdapterError(f"{self.label}: adapter exited ({self.tail()})") from e

    async def recv(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            except TimeoutError:
                raise AdapterError(f"{self.label}: no answer within {timeout:.0f} s") from None
            if not line:
                await self.proc.wait()
                raise AdapterError(
                    f"{self.label}: adapter exited with code {self.proc.returncode}"
                    f" ({self.tail()})")
            text = line.decode(errors="replace").strip()
            if not text.startswith("{"):
                continue  # a library printing to stdout: ignore
            try:
                obj: dict[str, Any] = json.loads(text)
            except json.JSONDecodeError:
                continue
            return obj

    async def request(self, obj: dict[str, Any], timeout: float) -> dict[str, Any]:
        await self.send(obj)
        return await self.recv(timeout)

    def tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        useful = [t for t in text if t.strip() and not t.startswith("--- ")]
        return " | ".join(useful[-lines:])[-400:] or "no output"

    async def close(self, timeout: float = 10.0) -> None:
        """Close stdin (the quit signal) and wait; kill when it does not go."""
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.kill()
                await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
