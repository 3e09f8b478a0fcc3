"""``prism.v1.Signals``: the gRPC twin of ``GET /v1/namespaces/{ns}/signals``, run through the pipeline."""

from __future__ import annotations

from prism.gateway.pipeline import Call, DataRoute
from prism.gateway.reply import Reply
from prism.gateway.runtime import Gateway
from prism.grpc._gen.prism.v1 import signals_pb2 as pb
from prism.grpc.keyvalue import GrpcMethod

__all__ = ["SERVICE", "signals_methods"]

SERVICE = "prism.v1.Signals"


async def get_signals(call: Call) -> Reply:
    signals = call.ns.signals(call.gateway.signals)
    out = pb.SignalsResponse(
        latency_target_ms=signals.latency_target_ms,
        latency_max_ms=signals.latency_max_ms,
        page_size_bytes=signals.page_size_bytes,
        max_value_bytes=signals.max_value_bytes,
        compression=signals.compression,
        hedge_after_ms=signals.hedge_after_ms,
        retry=pb.RetrySignal(max_attempts=signals.retry.max_attempts, backoff_ms=signals.retry.backoff_ms),
        refresh_after_s=signals.refresh_after_s,
        compress_above_bytes=signals.compress_above_bytes,
    )
    return Reply(200, out.SerializeToString())


def signals_methods(gateway: Gateway) -> list[GrpcMethod]:
    """The Signals service's one method, readable by anyone who may read the namespace."""
    name = f"/{SERVICE}/GetSignals"
    route = DataRoute("POST", name, get_signals, "signals", "read", kind="any", name=f"{SERVICE}/GetSignals")
    return [GrpcMethod(name, pb.GetSignalsRequest, route)]
