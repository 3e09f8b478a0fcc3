"""A migration process the crash tests kill with SIGKILL: ``python crash_child.py MODE SOURCE TARGET NS OUT``.

``backfill`` runs a slow backfill and writes each checkpoint's progress to OUT;
``switch`` keeps writing keys (each acknowledged etag goes to OUT) while it cuts
over and rolls back in a loop. Every line of OUT is flushed before the next step.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import IO

import prism
from prism.migration import MigrationRefused, MigrationSettings

SETTINGS = MigrationSettings(poll_interval=0.1, heartbeat_ttl=1.0, page_size=20)


def emit(out: IO[str], **fields: object) -> None:
    out.write(json.dumps(fields) + "\n")
    out.flush()


async def backfill(source: str, target: str, ns: str, out: IO[str]) -> None:
    async with prism.migrate(source, target, ns, settings=SETTINGS) as m:
        await m.backfill(rps=100, progress=lambda p: emit(out, copied=p.copied, cursor=p.cursor))
        emit(out, done=True)


async def switch(source: str, target: str, ns: str, out: IO[str]) -> None:
    async with prism.migrate(source, target, ns, settings=SETTINGS) as m:
        handle = m.namespace_handle()

        async def write() -> None:
            i = 0
            while True:
                key = f"c-{i:06d}"
                etag = await handle.put(key, key.encode())
                emit(out, key=key, etag=etag)
                i += 1

        writer = asyncio.create_task(write())
        try:
            while True:
                for action in (m.cutover, m.rollback):
                    try:
                        status = await action()
                        emit(out, phase=status["phase"])
                    except MigrationRefused as exc:
                        emit(out, refused=str(exc))
        finally:
            writer.cancel()


def main() -> None:
    mode, source, target, ns, path = sys.argv[1:]
    with open(path, "a", encoding="utf-8") as out:
        asyncio.run({"backfill": backfill, "switch": switch}[mode](source, target, ns, out))


if __name__ == "__main__":
    main()
