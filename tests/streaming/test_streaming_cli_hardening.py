"""``prism request`` and ``prism worker`` when a user stops them, re-attaches, lists, or mistypes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import shlex
import signal
import sys
from pathlib import Path

import httpx
import pytest
from streaming_helpers import Server, ServerFactory, make_service, running

PRISM = str(Path(sys.executable).parent / "prism")
REATTACH = re.compile(r"re-attach with: (prism request follow .*)$", re.M)
PROGRESS_LINE = re.compile(r"^\[[#.]+\] +[\d.]+% ", re.M)
PERCENTAGE = re.compile(r"^\[[#.]+\] +([\d.]+)% ", re.M)


async def prism(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PRISM,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def common(server: Server, token: str = "alice-token") -> list[str]:
    return ["--url", server.http, "--token", token]


def reattach_command(err: str, server: Server) -> list[str]:
    """The command the CLI printed, with the credential the user keeps in PRISM_TOKEN or --token."""
    match = REATTACH.search(err)
    assert match is not None, err
    words = shlex.split(match.group(1))
    assert "alice-token" not in words  # a credential is never printed
    return [*words[1:], "--token", "alice-token"]


async def test_timeout_while_following_prints_how_to_reattach_and_follow_prints_the_rest(
    server: Server,
) -> None:
    code, out, err = await prism(
        "request",
        "delay",
        "-d",
        '{"seconds": 3, "step": 0.25}',
        "--follow",
        "--timeout",
        "2",
        *common(server),
    )
    assert code == 1 and out == ""
    rid = re.search(r"request (r[0-9a-f]+) keeps running on the server", err)
    assert rid is not None, err
    assert "TIMEOUT: no result within 2 s" in err
    command = reattach_command(err, server)
    assert command[:3] == ["request", "follow", rid.group(1)]
    assert command[3:7] == ["--after-seq", command[4], "--url", server.http]
    seen = int(command[4])
    assert seen == len(PROGRESS_LINE.findall(err)) and seen >= 1
    before = err
    code, out, err = await prism(*command)
    assert code == 0, err
    assert json.loads(out) == {"slept": 3.0}
    # Only the events after the ones already shown: every progress event is shown once in all.
    async with httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": "Bearer alice-token"}
    ) as http:
        last_seq = (await http.get(f"/v1/requests/{rid.group(1)}")).json()["last_seq"]
    shown = PROGRESS_LINE.findall(err)
    assert len(shown) == last_seq - 1 - seen, err
    # In order across both commands (the percentage of the delay handler only goes up).
    percentages = [float(p) for p in PERCENTAGE.findall(before + err)]
    assert percentages == sorted(set(percentages)), before + err


@pytest.mark.parametrize(
    ("sig", "said", "exit_code"),
    [(signal.SIGINT, "interrupted", 130), (signal.SIGTERM, "stopped by SIGTERM", 143)],
)
async def test_ctrl_c_or_sigterm_while_following_leaves_the_request_running_and_says_how_to_reattach(
    server: Server, sig: signal.Signals, said: str, exit_code: int
) -> None:
    process = await asyncio.create_subprocess_exec(
        PRISM, "request", "delay", "-d", '{"seconds": 30, "step": 0.1}', "--follow", *common(server),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None and process.stdout is not None
    first = await asyncio.wait_for(process.stderr.readline(), 30)
    assert PROGRESS_LINE.match(first.decode()), first
    process.send_signal(sig)
    rest = await asyncio.wait_for(process.stderr.read(), 10)
    out = await process.stdout.read()
    assert await asyncio.wait_for(process.wait(), 10) == exit_code
    err = (first + rest).decode()
    assert out == b"" and "Traceback" not in err
    rid = re.search(rf"{said}; request (r[0-9a-f]+) keeps running on the server", err)
    assert rid is not None, err
    command = reattach_command(err, server)
    assert command[:3] == ["request", "follow", rid.group(1)]
    async with httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": "Bearer alice-token"}
    ) as http:
        status = (await http.get(f"/v1/requests/{rid.group(1)}")).json()
        assert status["status"] == "PROCESSING"
        await http.post(f"/v1/requests/{rid.group(1)}/cancel")


async def test_a_server_lost_while_following_leaves_the_way_back_to_the_request() -> None:
    stopped = False
    service = running(make_service())
    server = await service.__aenter__()
    try:
        process = await asyncio.create_subprocess_exec(
            PRISM, "request", "delay", "-d", '{"seconds": 30, "step": 0.1}', "--follow", *common(server),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        first = await asyncio.wait_for(process.stderr.readline(), 30)
        assert PROGRESS_LINE.match(first.decode()), first
        await service.__aexit__(None, None, None)
        stopped = True
        out, rest = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if not stopped:
            await service.__aexit__(None, None, None)
    err = (first + rest).decode()
    assert process.returncode == 1 and out == b"" and "Traceback" not in err
    assert "reconnect attempts failed" in err
    assert re.search(
        r"request (r[0-9a-f]+) may still be running; re-attach with: prism request follow \1 ", err
    ), err


async def test_follow_of_a_finished_request_prints_its_result_and_unknown_ids_fail(server: Server) -> None:
    code, out, _ = await prism("request", "delay", "-d", '{"seconds": 0.1}', "--follow", *common(server))
    assert code == 0
    async with httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": "Bearer alice-token"}
    ) as http:
        (listed,) = (await http.get("/v1/requests")).json()["requests"]
    code, out, err = await prism("request", "follow", listed["request_id"], *common(server))
    assert code == 0 and json.loads(out) == {"slept": 0.1}
    code, _, err = await prism("request", "follow", "rnope", *common(server))
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = await prism(
        "request", "follow", listed["request_id"], "--after-seq", "-1", *common(server)
    )
    assert code == 2 and "--after-seq" in err and ">= 0" in err


async def test_an_unknown_action_lists_the_valid_ones(server: Server) -> None:
    code, out, err = await prism("request", "teleport", *common(server))
    assert code == 1 and out == ""
    assert "INVALID_ACTION: unknown action 'teleport'" in err
    assert "valid actions: delay, echo, generate_report" in err


async def test_unreachable_server_and_bad_url_are_one_line_errors() -> None:
    from prism.testing.servers import free_port

    code, _, err = await prism("request", "echo", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in err and "Connection refused" in err and "Traceback" not in err
    code, _, err = await prism("request", "echo", "--url", "localhost:8080")
    assert code == 2 and "--url" in err and "Traceback" not in err
    code, _, err = await prism("request", "list", "--url", "localhost:8080")
    assert code == 2 and "--url" in err and "Traceback" not in err


def run_on_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run prism with its stdout on a pseudo-terminal (as in an interactive shell)."""
    import subprocess

    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            [PRISM, *args], stdout=secondary, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        os.close(secondary)
        secondary = -1
        chunks = []
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not data:
                break
            chunks.append(data)
        _, err = proc.communicate(timeout=60)
        return proc.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), err
    finally:
        os.close(main)
        if secondary >= 0:
            os.close(secondary)


async def test_list_prints_a_table_on_a_terminal_json_otherwise_and_says_when_more_exist(
    server: Server,
) -> None:
    for i in range(3):
        code, _, _ = await prism(
            "request", "delay", "-d", json.dumps({"seconds": 0.1 * (i + 1)}), *common(server)
        )
        assert code == 0
    code, table, err = await asyncio.to_thread(
        run_on_a_terminal, "request", "list", "--limit", "2", *common(server)
    )
    assert code == 0, err
    lines = table.splitlines()
    assert lines[0].split() == ["REQUEST", "ID", "ACTION", "STATUS", "PROGRESS", "CREATED"]
    assert len(lines) == 3 and all(
        re.match(r"r[0-9a-f]+ +delay +[A-Z]+ +\d+% +20\d\d-", row) for row in lines[1:]
    )
    more = re.search(r"more requests than the 2 shown; next page: (prism request list .*)$", err, re.M)
    assert more is not None, err
    next_page = [*shlex.split(more.group(1))[1:], "--token", "alice-token"]
    assert "--page-token" in next_page
    code, table2, err2 = await asyncio.to_thread(run_on_a_terminal, *next_page)
    assert code == 0 and "more requests" not in err2
    assert len(table2.splitlines()) == 2  # the header and the third request
    ids = {row.split()[0] for row in lines[1:] + table2.splitlines()[1:]}
    assert len(ids) == 3
    # Piped (or with --json): the server's JSON, and the same note on stderr.
    code, out, err = await prism("request", "list", "--limit", "2", *common(server))
    assert code == 0 and len(json.loads(out)["requests"]) == 2 and "next_page_token" in json.loads(out)
    assert "more requests than the 2 shown" in err
    code, out, _ = await asyncio.to_thread(run_on_a_terminal, "request", "list", "--json", *common(server))
    assert code == 0 and {r["request_id"] for r in json.loads(out)["requests"]} == ids
    code, out, err = await prism("request", "list", *common(server, token="carol-token"))
    assert code == 0 and json.loads(out) == {"requests": []} and err == ""


async def test_a_worker_stopped_with_ctrl_c_releases_its_job_and_says_so(
    server_factory: ServerFactory, redis_url: str
) -> None:
    server = await server_factory(redis_url, run_workers=False)
    options = ["-o", "demo_handlers=true", "-o", "lease_seconds=2", "-o", "heartbeat_interval=0.5"]
    options += ["-o", "poll_interval=0.2", "-o", "cancel_grace=0"]

    async def worker() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            PRISM, "worker", "--store", redis_url, "--concurrency", "1", *options,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    first = await worker()
    async with httpx.AsyncClient(
        base_url=server.http, headers={"Authorization": "Bearer alice-token"}
    ) as http:
        try:
            rid = (
                await http.post(
                    "/v1/requests", json={"action": "delay", "payload": {"seconds": 1.0, "step": 0.1}}
                )
            ).json()["request_id"]
            for _ in range(300):
                body = (await http.get(f"/v1/requests/{rid}")).json()
                if body["last_seq"] >= 1:
                    break
                await asyncio.sleep(0.05)
            assert body["status"] == "PROCESSING", body
            first.send_signal(signal.SIGINT)
            _, raw = await asyncio.wait_for(first.communicate(), 15)
        finally:
            if first.returncode is None:
                first.kill()
                await first.wait()
        err = raw.decode()
        assert first.returncode == 0, err
        assert f"SIGINT received, stopping; releasing 1 running job(s) for other workers: {rid}" in err
        assert (
            f"stopped before request {rid} (delay, attempt 1) finished; released it for another worker" in err
        )
        assert "Traceback" not in err and err.rstrip().endswith(
            "prism worker: stopped: 0 job(s) finished, 1 released, 0 abandoned"
        )
        # Released, not failed: the next worker runs it at once (a second attempt, from the start).
        record = await server.service.requests.get(rid)
        assert record is not None and record.record.lease_until == 0.0
        second = await worker()
        try:
            for _ in range(300):
                body = (await http.get(f"/v1/requests/{rid}")).json()
                if body["status"] == "COMPLETED":
                    break
                await asyncio.sleep(0.05)
        finally:
            second.send_signal(signal.SIGTERM)
            _, raw = await asyncio.wait_for(second.communicate(), 15)
    assert body["status"] == "COMPLETED" and body["result"] == {"slept": 1.0} and body["attempts"] == 2
    assert second.returncode == 0 and "SIGTERM received, stopping; no job running" in raw.decode()
