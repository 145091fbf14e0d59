"""The batched label service: teacher replicas behind dynamic batching, on Ray.

``LabelService.start(spec, ...)`` runs replicas of a teacher as async Ray actors (the
default) or as Ray Serve deployments, and ``service.handle`` is a picklable client that
rollout workers call. Requests carry ids, so a retry is served from a cache instead of
being labelled twice. ``service.metrics()`` reports queue depth, batch sizes, labels/s,
utilisation and per-batch overhead. ``policies.service.measure`` benchmarks a service.
"""

from policies.service.client import LabelService, LabelServiceHandle, PendingLabels
from policies.service.config import (
    BACKENDS,
    LabelServiceError,
    ServiceConfig,
    new_request_id,
)
from policies.service.metrics import ReplicaMetrics, ServiceMetrics

__all__ = [
    "BACKENDS",
    "LabelService",
    "LabelServiceError",
    "LabelServiceHandle",
    "PendingLabels",
    "ReplicaMetrics",
    "ServiceConfig",
    "ServiceMetrics",
    "new_request_id",
]
