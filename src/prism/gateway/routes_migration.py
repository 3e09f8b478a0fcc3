"""``/v1/namespaces/{ns}/migration[/{action}]``: live migration of a namespace to another store.

Only principals holding the namespace's admin role may see or drive a migration, and
every request is audited. The answers are the migration's status (``prism.migration``);
a refused action is a 409 naming the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from prism.gateway.auth import Principal
from prism.gateway.openapi import Operation, describe
from prism.gateway.policy import authorize
from prism.gateway.problem import HTTPProblem
from prism.gateway.routes_admin import audited_call
from prism.gateway.runtime import Gateway, ServedNamespace
from prism.gateway.wire import JSON, decode_body
from prism.migration import Migration, MigrationRefused
from prism.migration.state import FINISHED, Phase

__all__ = ["MigrationStart", "MigrationStatus", "MigrationStep", "migration_routes"]

#: Largest body of a migration request.
MAX_BODY = 4096
#: Actions that run in the background and answer 202 at once.
BACKGROUND = ("backfill", "verify")
ACTIONS = ("backfill", "verify", "cutover", "rollback", "complete", "abort")
#: Capabilities a target must have when the namespace's store has them.
_USED = ("ttl", "etag", "transactions", "range_reads", "prefix_scan")


class MigrationStart(msgspec.Struct, forbid_unknown_fields=True):
    """Move the namespace to the store named ``to``; a ``shadow_read_sample`` of reads is compared."""

    to: str
    shadow_read_sample: float = 0.0


class MigrationStep(msgspec.Struct, forbid_unknown_fields=True):
    """Options: ``force`` a cutover without a clean verify; a backfill's ``rps`` and ``parallelism``."""

    force: bool = False
    rps: float | None = None
    parallelism: int | None = None


class BackfillStatus(msgspec.Struct):
    copied: int
    skipped: int
    done: bool


class VerifyStatus(msgspec.Struct):
    checked: int
    missing: int
    extra: int
    different: int
    done: bool
    samples: list[str]


class ShadowStatus(msgspec.Struct):
    writes: int
    failed: int
    pending: int


class ShadowReadStatus(msgspec.Struct):
    compared: int
    mismatches: int


class MigrationStatus(msgspec.Struct, rename={"from_": "from"}):
    """Where a migration stands; ``shadow`` and ``shadow_reads`` count what the answering process saw."""

    namespace: str
    from_: str
    to: str
    phase: str
    primary: str
    backfill: BackfillStatus
    verify: VerifyStatus
    shadow: ShadowStatus
    shadow_reads: ShadowReadStatus
    error: str | None


def _json(payload: Any, status: int = 200) -> Response:
    return Response(JSON.encode(payload), status, media_type="application/json")


async def read_body(request: Request, limit: int, within: float) -> bytes:
    """The request body: 413 past ``limit`` bytes, 408 when it has not arrived ``within`` seconds."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPProblem(413, "BODY_TOO_LARGE", f"the body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPProblem(
            408,
            "BODY_TIMEOUT",
            f"the request body did not arrive within {within:g} s",
            headers={"Connection": "close"},
        ) from None
    return b"".join(chunks)


def migration_routes(gateway: Gateway) -> list[BaseRoute]:
    """The migration routes, bound to ``gateway``."""
    config = gateway.config

    async def audited(
        request: Request, op: str, answer: Callable[[Principal, ServedNamespace], Awaitable[Response]]
    ) -> Response:
        """``answer``'s response for an admin of the namespace, with the request's audit event."""
        name = request.path_params["ns"]

        async def checked(principal: Principal) -> Response:
            served = gateway.namespaces.get(name)
            if served is None:
                raise HTTPProblem(404, "NAMESPACE_NOT_FOUND", f"there is no namespace {name!r}")
            request.scope["prism.namespace"] = name
            authorize(principal, served.config, "admin")
            try:
                return await answer(principal, served)
            except MigrationRefused as exc:
                raise HTTPProblem(409, exc.code, str(exc)) from None

        return await audited_call(gateway, request, op, name, checked)

    def handle(served: ServedNamespace, target: str) -> Migration:
        migration = gateway.migrations.migration(served.name, target)
        if migration is None:
            if not gateway.migrations.enabled:
                reason = "the gateway has no control store to keep migration state in (set control.store)"
            elif served.kind != "kv":
                reason = f"{served.name!r} is a {served.kind} namespace; only KeyValue namespaces migrate"
            else:
                reason = (
                    f"namespace {served.name!r} is tenant-scoped; tenant-scoped namespaces cannot migrate"
                )
            raise HTTPProblem(400, "MIGRATION_UNAVAILABLE", reason)
        return migration

    async def current(served: ServedNamespace) -> Migration:
        migration = handle(served, served.store_name)
        found = await migration.records.read_state()
        if found is None:
            raise HTTPProblem(404, "MIGRATION_NOT_FOUND", f"namespace {served.name!r} has no migration")
        state = found[0]
        return Migration.attached(migration.router, migration.store, state.source, state.target)

    def check_target(served: ServedNamespace, to: str) -> None:
        target = gateway.stores.get(to)
        if target is None:
            raise HTTPProblem(
                400, "UNKNOWN_STORE", f"unknown store {to!r} (stores: {', '.join(gateway.stores)})"
            )
        if to == served.store_name:
            raise HTTPProblem(400, "INVALID_TARGET", f"namespace {served.name!r} is already on store {to!r}")
        have = gateway.stores[served.store_name].capabilities
        caps = target.capabilities
        if not caps.restore:
            raise HTTPProblem(
                400, "STORE_LACKS_CAPABILITY", f"store {to!r} cannot keep the etags of copied items"
            )
        for name in _USED:
            if getattr(have, name) and not getattr(caps, name):
                raise HTTPProblem(
                    400,
                    "STORE_LACKS_CAPABILITY",
                    f"store {to!r} lacks {name}, which namespace {served.name!r} has",
                )
        if caps.max_value_bytes < served.max_value_bytes:
            raise HTTPProblem(
                400,
                "STORE_LACKS_CAPABILITY",
                f"store {to!r} holds values up to {caps.max_value_bytes} bytes; "
                f"namespace {served.name!r} accepts {served.max_value_bytes}",
            )

    async def start(request: Request) -> Response:
        async def answer(principal: Principal, served: ServedNamespace) -> Response:
            body = decode_body(await read_body(request, MAX_BODY, config.server.body_timeout), MigrationStart)
            check_target(served, body.to)
            migration = handle(served, body.to)
            found = await migration.records.read_state()
            if (
                found is not None
                and found[0].phase == Phase.COMPLETE
                and found[0].target != served.store_name
            ):
                raise MigrationRefused(
                    f"namespace {served.name!r} was moved to store {found[0].target!r}: point it at that "
                    "store in the config before starting another migration"
                )
            if found is not None and found[0].phase not in FINISHED:
                raise MigrationRefused(
                    f"a migration of namespace {served.name!r} is already running (phase {found[0].phase})"
                )
            return _json(await migration.start(shadow_read_sample=body.shadow_read_sample), 201)

        return await audited(request, "migration_start", answer)

    async def status(request: Request) -> Response:
        async def answer(principal: Principal, served: ServedNamespace) -> Response:
            return _json(await (await current(served)).status())

        return await audited(request, "migration_get", answer)

    async def act(request: Request) -> Response:
        action = request.path_params["action"]

        async def answer(principal: Principal, served: ServedNamespace) -> Response:
            if action not in ACTIONS:
                raise HTTPProblem(
                    404, "NOT_FOUND", f"unknown migration action {action!r} (actions: {', '.join(ACTIONS)})"
                )
            raw = await read_body(request, MAX_BODY, config.server.body_timeout)
            step = decode_body(raw, MigrationStep) if raw.strip() else MigrationStep()
            migration = await current(served)
            if action == "cutover":
                return _json(await migration.cutover(force=step.force))
            if action not in BACKGROUND:
                run = {
                    "rollback": migration.rollback,
                    "complete": migration.complete,
                    "abort": migration.abort,
                }
                return _json(await run[action]())
            running = gateway.migrations.tasks.get(served.name)
            if running is not None and not running.done():
                raise MigrationRefused(
                    f"a backfill or verify of namespace {served.name!r} is already running here"
                )
            status = await migration.begin(action)
            if action == "backfill":
                work = migration.backfill(rps=step.rps, parallelism=step.parallelism)
            else:
                work = migration.verify()
            gateway.migrations.run(served.name, work)
            return _json(status, 202)

        return await audited(request, f"migration_{action}", answer)

    errors = {
        400: "Bad body, unknown store, or a store lacking a capability the namespace uses.",
        401: "Missing or invalid credentials.",
        403: "The caller does not hold the namespace's admin role.",
        404: "No such namespace (or no migration).",
        409: "The phase does not allow it; the body names the reason.",
        413: "The body is too large.",
        503: "The control store or the audit trail is unavailable.",
    }
    status_doc = "The migration's status."

    def step(action: str, summary: str, description: str, status: int) -> Operation:
        return Operation(
            f"migration{action.title()}",
            summary,
            description,
            body=MigrationStep,
            status=status,
            response=MigrationStatus,
            response_description=status_doc,
            errors=errors,
        )

    def act_on(action: str) -> Callable[[Request], Awaitable[Response]]:
        async def route(request: Request) -> Response:
            request.path_params["action"] = action
            return await act(request)

        return route

    return [
        describe(
            Route("/v1/namespaces/{ns}/migration", start, methods=["POST"]),
            post=Operation(
                "startMigration",
                "Start migrating a namespace to another store",
                "Shadow writes begin: every acknowledged write of the namespace also reaches the target.",
                body=MigrationStart,
                status=201,
                response=MigrationStatus,
                response_description=status_doc,
                errors={**errors, 409: "A migration of the namespace is already running."},
            ),
        ),
        describe(
            Route("/v1/namespaces/{ns}/migration", status, methods=["GET"]),
            get=Operation(
                "getMigration",
                "A namespace's migration status",
                response=MigrationStatus,
                response_description=status_doc,
                errors=errors,
            ),
        ),
        *(
            describe(
                Route(f"/v1/namespaces/{{ns}}/migration/{name}", act_on(name), methods=["POST"]),
                post=step(
                    name,
                    f"Start the migration's {name}",
                    f"Enters the `{name}` phase and runs it in the background of this process (`rps` and "
                    "`parallelism` throttle a backfill); follow it with the status.",
                    202,
                ),
            )
            for name in BACKGROUND
        ),
        describe(
            Route("/v1/namespaces/{ns}/migration/{action}", act, methods=["POST"]),
            post=step(
                "action",
                "Cut over, roll back, complete or abort a migration",
                "`action`: `cutover` (`force` skips the clean-verify rule), `rollback`, `complete`, `abort`.",
                200,
            ),
        ),
    ]
