"""docs/streaming.md: its Python examples compile, and the handler example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from prism.streaming import StreamingService
from prism.streaming.config import StreamingConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "streaming.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_every_python_example_compiles() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 2
    for block in blocks:
        compile(block, str(DOC), "exec")


async def test_the_handler_example_registers_and_runs() -> None:
    (example,) = [b for b in python_blocks() if "@router.handler" in b]
    scope: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(example, str(DOC), "exec"), scope)
    router = scope["router"]
    from prism.streaming import ProgressReporter, Router

    assert isinstance(router, Router)
    spec = router.get("resize")
    assert spec is not None and spec.permission == "images" and spec.retries == 3
    payload = spec.decode_payload(b'{"url": "https://x/a.png", "width": 100}')
    reporter = ProgressReporter("r", rate=10)
    assert await spec.func(payload, reporter) == {"url": "https://x/a.png?w=100"}


def test_the_configuration_table_lists_every_setting() -> None:
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)`", text, re.M))
    documented |= {
        name
        for row in re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)+) \|", text, re.M)
        for name in re.findall(r"`([a-z_]+)`", row)
    }
    fields = {f.name for f in msgspec.structs.fields(StreamingConfig)}
    assert fields <= documented, sorted(fields - documented)


def test_the_package_exports_the_service() -> None:
    assert StreamingService.__module__ == "prism.streaming.service"
