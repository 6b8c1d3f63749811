"""The gRPC door: a `grpc.aio` server in the same process and event loop as uvicorn, over the same Pipeline.

Started by the app's lifespan once the pipeline is, stopped before it: `drain` stops taking calls and gives the
ones in flight GRACEFUL_SHUTDOWN_S, and the entry point starts it as soon as uvicorn starts its own drain, so
both doors drain at once within the one grace period.
"""

from __future__ import annotations

import asyncio
import logging
import math

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.core.config import Settings
from service.core.pipeline import Pipeline
from service.edge.grpc import grpc_predict_v2_pb2 as pb
from service.edge.grpc.servicer import InferenceServicer, handlers
from service.edge.routes.v2 import codec

log = logging.getLogger("service")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name  # inference.GRPCInferenceService
# Room for a request's own fields around its tensors' bytes (names, shape, parameters, 4-byte prefixes).
MESSAGE_OVERHEAD_BYTES = 64 * 1024
PIXELS_BYTES = 4 * math.prod(codec.PIXELS.shape[1:])  # one image as the FP32 input: 40,000 bytes


def max_message_bytes(settings: Settings) -> int:
    """The largest request the door reads: the largest valid one, MAX_FILES files of MAX_FILE_BYTES each (or
    MAX_FILES images of FP32 pixels, when those are larger), never more than MAX_BODY_BYTES (what the HTTP door
    reads). gRPC answers a larger one RESOURCE_EXHAUSTED itself, before any of the service's code runs."""
    per_image = max(settings.max_file_bytes + 4, PIXELS_BYTES)  # + 4: a BYTES element's length prefix
    return min(settings.max_files * per_image + MESSAGE_OVERHEAD_BYTES, settings.max_body_bytes)


def max_calls(settings: Settings) -> int:
    """Calls running at once. Each holds its whole message (up to max_message_bytes) from before its handler
    runs, so they are bounded: as many as images may be admitted (MAX_QUEUE_IMAGES; a call carries at least
    one), and as many again, which admission answers UNAVAILABLE with its retry hint. gRPC answers calls beyond
    these RESOURCE_EXHAUSTED ("Concurrent RPC limit exceeded!") before reading their message."""
    return 2 * settings.max_queue_images


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcDoor:
    """The protocol's GRPCInferenceService and the standard health service on GRPC_PORT."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = address(settings.host, settings.grpc_port)
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_receive_message_length", max_message_bytes(self.settings)),
            # gRPC sets SO_REUSEPORT by default: a second server on a port in use would share it silently.
            ("grpc.so_reuseport", 0),
        ]

    async def start(self, pipeline: Pipeline, server_version: str) -> None:
        """Serves on GRPC_PORT; a port that cannot be bound raises OSError naming it."""
        settings = self.settings
        server = grpc.aio.server(options=self.options, maximum_concurrent_rpcs=max_calls(settings))
        server.add_generic_rpc_handlers((handlers(InferenceServicer(pipeline, settings, server_version)),))
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        try:
            server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise OSError(
                f"cannot listen for gRPC on {self.address}: {exc} (set GRPC_PORT, or GRPC_ENABLED=false)"
            ) from exc
        await server.start()
        for service in ("", SERVICE_NAME):  # "": the whole server, what Kubernetes' gRPC probe asks by default
            await checks.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server, self._health = server, checks
        log.info("listening for gRPC (the Open Inference Protocol, health) on %s", self.address)

    def drain(self) -> asyncio.Task[None]:
        """Stops taking calls (health: NOT_SERVING) and waits up to GRACEFUL_SHUTDOWN_S for those in flight;
        the same task for every caller."""
        if self._drain is None:
            self._drain = asyncio.ensure_future(self._stop())
        return self._drain

    async def stop(self) -> None:
        await asyncio.shield(self.drain())

    async def _stop(self) -> None:
        if self._server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await self._server.stop(grace=self.settings.graceful_shutdown_s)
        log.info("gRPC stopped after answering its calls in flight")
