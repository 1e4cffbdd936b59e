"""Adaptation: expected performance, deviation triggers, configuration search by replay, and
scaling (on recommendations and on memory utilization) with an audit trail."""

from streamprov.adapt.autoscaler import (
    MemoryAutoscaler,
    MemoryPolicy,
    MemorySampler,
    PsutilMemorySampler,
    ScalableDeployment,
)
from streamprov.adapt.errors import TuningBusy, TuningConflict
from streamprov.adapt.expectation import Expectation, ExpectationModel
from streamprov.adapt.live import LatencyProbeSink, LiveDeployments, LiveMonitor, LiveObserver
from streamprov.adapt.search import (
    Evaluator,
    GeneticSearch,
    GridSearch,
    HillClimber,
    SearchResult,
    make_search,
    search,
)
from streamprov.adapt.service import AdaptationService
from streamprov.adapt.slo import Evaluation, Slo
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.adapt.trigger import DeviationTrigger, Observation, Thresholds

__all__ = [
    "AdaptationService",
    "Candidate",
    "DeviationTrigger",
    "Evaluation",
    "Evaluator",
    "Expectation",
    "ExpectationModel",
    "GeneticSearch",
    "GridSearch",
    "HillClimber",
    "LatencyProbeSink",
    "LiveDeployments",
    "LiveMonitor",
    "LiveObserver",
    "MemoryAutoscaler",
    "MemoryPolicy",
    "MemorySampler",
    "Observation",
    "PsutilMemorySampler",
    "ScalableDeployment",
    "SearchResult",
    "SearchSpace",
    "Slo",
    "Thresholds",
    "TuningBusy",
    "TuningConflict",
    "make_search",
    "search",
]
