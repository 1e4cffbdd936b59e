"""Searching the configuration space: hill climbing, a genetic search (optuna's NSGA-II) and
the exhaustive grid as the baseline.

Every search asks an ``Evaluator`` for candidates through an ``EvaluationLog``, which counts
each distinct candidate once against the budget (asking again is free: results are cached by
configuration) and keeps the order in which candidates were first evaluated, so "how many
evaluations did it take to get within 5 % of the best" can be read off afterwards.

Ranking (``Evaluation.rank``): a candidate that meets the SLO beats one that does not; among
those that do, the cheaper wins; among those that do not, the smaller violation wins (so a
search can climb towards feasibility).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamprov.adapt.slo import Evaluation
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.errors import InvalidInput

ALGORITHMS = ("hill-climb", "genetic", "grid")


class Evaluator(Protocol):
    """Measures one candidate against the SLO.

    Contract: ``evaluate`` may be slow (a real replay takes seconds) and may repeat its
    measurement internally when results are noisy; it returns one ``Evaluation`` whose
    ``candidate`` is the one asked for, and raises ``StreamprovError`` only for failures that
    make the whole search pointless (an unknown stream, say). A candidate that fails to run
    is an evaluation that misses the SLO, not an exception. It is never called twice for the
    same candidate by one ``EvaluationLog``.
    """

    def evaluate(self, candidate: Candidate) -> Evaluation: ...


class BudgetExhausted(Exception):
    """Internal: the log's budget of distinct evaluations is spent."""


@dataclass(slots=True)
class EvaluationLog:
    """Cache and counter of one search's evaluations, in the order they were first made."""

    evaluator: Evaluator
    budget: int
    on_evaluation: Callable[[Evaluation], None] | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    _cache: dict[Candidate, Evaluation] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise InvalidInput("budget must be at least 1 evaluation", field="budget")

    @property
    def remaining(self) -> int:
        return self.budget - len(self.evaluations)

    def known(self, candidate: Candidate) -> Evaluation | None:
        return self._cache.get(candidate)

    def get(self, candidate: Candidate) -> Evaluation:
        got = self._cache.get(candidate)
        if got is not None:
            return got
        if self.remaining <= 0:
            raise BudgetExhausted
        ev = self.evaluator.evaluate(candidate)
        self._cache[candidate] = ev
        self.evaluations.append(ev)
        if self.on_evaluation is not None:
            self.on_evaluation(ev)
        return ev

    def best(self) -> Evaluation | None:
        """The cheapest evaluation that met the SLO (None when none did)."""
        met = [e for e in self.evaluations if e.slo_met]
        return min(met, key=lambda e: e.rank) if met else None


@dataclass(frozen=True, slots=True)
class SearchResult:
    algorithm: str
    evaluations: list[Evaluation]
    best: Evaluation | None
    start: Evaluation | None

    def evaluations_to_reach(self, cost: float, tolerance: float = 0.05) -> int | None:
        """Evaluations made until a candidate meeting the SLO cost at most
        ``cost * (1 + tolerance)`` had been found (None if never)."""
        for i, e in enumerate(self.evaluations, start=1):
            if e.slo_met and e.cost <= cost * (1 + tolerance) + 1e-12:
                return i
        return None


class Search(Protocol):
    """One algorithm. ``run`` asks ``log`` for candidates until it is done or the budget is
    spent (``BudgetExhausted`` from ``log.get`` ends it; it never escapes ``run``)."""

    name: str

    def run(self, log: EvaluationLog, start: Candidate | None) -> None: ...


def search(algorithm: Search, space: SearchSpace, evaluator: Evaluator, *, budget: int,
           start: Candidate | None = None,
           on_evaluation: Callable[[Evaluation], None] | None = None) -> SearchResult:
    """Run ``algorithm`` over ``space`` with at most ``budget`` distinct evaluations."""
    log = EvaluationLog(evaluator, budget, on_evaluation)
    first = space.clamp(start) if start is not None else None
    with contextlib.suppress(BudgetExhausted):
        algorithm.run(log, first)
    return SearchResult(algorithm.name, list(log.evaluations), log.best(),
                        log.known(first) if first is not None else None)


# -- the algorithms ------------------------------------------------------------------------------
@dataclass(slots=True)
class GridSearch:
    """Every candidate of the space, cheapest first (the exhaustive baseline)."""

    space: SearchSpace
    name: str = "grid"

    def run(self, log: EvaluationLog, start: Candidate | None) -> None:
        if start is not None:
            log.get(start)
        for c in sorted(self.space, key=lambda c: (self.space.cost(c), c)):
            log.get(c)


@dataclass(slots=True)
class HillClimber:
    """First-improvement hill climbing over ``SearchSpace.neighbours`` (+/-1 node, the adjacent
    node type, batch size x2 or /2), with kicks and random restarts while budget is left.

    * From a candidate that meets the SLO only cheaper neighbours can improve, so only those
      are evaluated, cheapest first; from one that misses it, neighbours with more capacity
      (more nodes, a bigger type) are tried first, then the batch sizes.
    * Once a candidate meets the SLO, nothing at its cost or above is evaluated again.
    * At a local optimum, the search is kicked: it climbs again from each cheaper neighbour
      that missed the SLO (a cheaper node type needs more nodes, which single steps only
      reach through candidates that miss it), then from random unvisited cheaper candidates.
    """

    space: SearchSpace
    restarts: int = 3
    seed: int = 0
    name: str = "hill-climb"
    _best: Evaluation | None = None

    def _useful(self, c: Candidate) -> bool:
        return self._best is None or self.space.cost(c) < self._best.cost

    def _order(self, current: Evaluation, nbrs: Iterable[Candidate]) -> list[Candidate]:
        cost = self.space.cost
        useful = [n for n in nbrs if self._useful(n)]
        if current.slo_met:
            return sorted(useful, key=lambda n: (cost(n), n))
        c = current.candidate
        types = self.space.node_types

        def capacity_first(n: Candidate) -> tuple[int, int, Candidate]:
            more = (n.nodes - c.nodes) + (types.index(n.node_type) - types.index(c.node_type))
            return (-more, abs(n.batch_size - c.batch_size), n)

        return sorted(useful, key=capacity_first)

    def _climb(self, log: EvaluationLog, start: Candidate) -> Evaluation:
        current = log.get(start)
        while True:
            if current.slo_met and (self._best is None or current.rank < self._best.rank):
                self._best = current
            for n in self._order(current, self.space.neighbours(current.candidate)):
                ev = log.get(n)
                if ev.rank < current.rank:
                    current = ev
                    break
            else:
                return current

    def run(self, log: EvaluationLog, start: Candidate | None) -> None:
        rng = random.Random(self.seed)
        self._best = None
        everything = list(self.space)
        first = start if start is not None else everything[len(everything) // 2]
        optimum = self._climb(log, first)
        tried: set[Candidate] = {first}
        restarts = self.restarts
        while log.remaining > 0:
            kicks = [n for n in self.space.neighbours(optimum.candidate)
                     if n not in tried and self._useful(n)
                     and (ev := log.known(n)) is not None and not ev.slo_met]
            if kicks:
                kick = min(kicks, key=lambda n: (self.space.cost(n), n))
            else:
                fresh = [c for c in everything if log.known(c) is None and self._useful(c)]
                if not fresh or restarts <= 0:
                    return
                restarts -= 1
                kick = rng.choice(fresh)
            tried.add(kick)
            found = self._climb(log, kick)
            if found.slo_met and found.rank <= (self._best or found).rank:
                optimum = found


@dataclass(slots=True)
class GeneticSearch:
    """A genetic search by optuna's NSGA-II sampler: cost as the objective, the SLO violation
    as a constraint (a candidate meeting the SLO dominates any that does not).

    ``population_size`` candidates per generation; the first generation is random (plus the
    starting candidate). Ends when the budget is spent or after ``max_trials_factor x budget``
    trials (NSGA-II re-proposes known candidates, which cost nothing but time).
    """

    space: SearchSpace
    population_size: int = 8
    seed: int = 0
    max_trials_factor: int = 20
    name: str = "genetic"

    def run(self, log: EvaluationLog, start: Candidate | None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        space = self.space
        lo, hi = space.node_range

        def objective(trial: optuna.Trial) -> float:
            c = Candidate(trial.suggest_int("nodes", lo, hi),
                          str(trial.suggest_categorical("node_type", list(space.node_types))),
                          int(trial.suggest_categorical("batch_size",
                                                        list(space.batch_sizes))))
            if log.known(c) is None and log.remaining <= 0:
                trial.study.stop()
                raise optuna.TrialPruned
            ev = log.get(c)
            trial.set_constraint("slo", ev.violation)
            if log.remaining <= 0:
                trial.study.stop()
            return ev.cost

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.NSGAIISampler(
                population_size=self.population_size, seed=self.seed)
            study = optuna.create_study(direction="minimize", sampler=sampler)
            if start is not None:
                study.enqueue_trial({"nodes": start.nodes, "node_type": start.node_type,
                                     "batch_size": start.batch_size})
            study.optimize(objective, n_trials=self.max_trials_factor * log.budget,
                           catch=())


def make_search(algorithm: str, space: SearchSpace, *, seed: int = 0,
                population_size: int | None = None) -> Search:
    """``hill-climb``, ``genetic`` or ``grid``; ``InvalidInput`` (field ``algorithm``) else."""
    if algorithm == "hill-climb":
        return HillClimber(space, seed=seed)
    if algorithm == "genetic":
        pop = population_size or max(4, min(12, space.size // 6))
        return GeneticSearch(space, population_size=pop, seed=seed)
    if algorithm == "grid":
        return GridSearch(space)
    raise InvalidInput(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}",
                       field="algorithm")


def summary(result: SearchResult) -> dict[str, Any]:
    best, start = result.best, result.start
    improvement = None
    if best is not None and start is not None and start.cost > 0:
        improvement = round(1 - best.cost / start.cost, 6)
    return {"algorithm": result.algorithm, "evaluations": len(result.evaluations),
            "best": best.to_json() if best else None,
            "start": start.to_json() if start else None,
            "costImprovement": improvement}
