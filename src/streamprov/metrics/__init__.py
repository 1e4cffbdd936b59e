"""Measurements: latency histograms and resource sampling of node processes."""

from streamprov.metrics.histogram import LatencyHistogram
from streamprov.metrics.resources import NodeUsage, ResourceSampler

__all__ = ["LatencyHistogram", "NodeUsage", "ResourceSampler"]
