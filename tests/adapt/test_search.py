from __future__ import annotations

import pytest

from streamprov.adapt.search import (
    GeneticSearch,
    GridSearch,
    HillClimber,
    make_search,
    search,
    summary,
)
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.errors import InvalidInput
from tests.adapt.landscape import SPACE, LandscapeEvaluator, optimum

START = Candidate(8, "large", 2048)


def test_the_landscape_has_one_cheapest_answer() -> None:
    best = optimum()
    assert best.slo_met
    ties = [c for c in SPACE if LandscapeEvaluator().evaluate(c).slo_met
            and SPACE.cost(c) == best.cost]
    assert ties, best


def test_grid_evaluates_everything_and_finds_the_optimum() -> None:
    result = search(GridSearch(SPACE), SPACE, LandscapeEvaluator(), budget=SPACE.size)
    assert len(result.evaluations) == SPACE.size
    assert result.best is not None and result.best.cost == optimum().cost


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hill_climbing_finds_the_optimum_with_a_fraction_of_the_grid(seed: int) -> None:
    ev = LandscapeEvaluator()
    result = search(HillClimber(SPACE, seed=seed), SPACE, ev, budget=SPACE.size // 4,
                    start=START)
    assert result.best is not None and result.best.cost == pytest.approx(optimum().cost)
    assert len(set(ev.calls)) == len(ev.calls)  # cached: never the same candidate twice
    assert result.start is not None and result.start.candidate == START


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_genetic_search_finds_the_optimum_with_a_fraction_of_the_grid(seed: int) -> None:
    ev = LandscapeEvaluator()
    result = search(GeneticSearch(SPACE, population_size=8, seed=seed), SPACE, ev,
                    budget=SPACE.size // 3, start=START)
    assert result.best is not None
    assert result.best.cost <= optimum().cost * 1.05
    assert len(ev.calls) <= SPACE.size // 3


def test_budget_is_never_exceeded() -> None:
    for algo in ("hill-climb", "genetic", "grid"):
        ev = LandscapeEvaluator()
        result = search(make_search(algo, SPACE), SPACE, ev, budget=5, start=START)
        assert len(result.evaluations) == len(ev.calls) <= 5


def test_summary_reports_the_improvement_over_the_start() -> None:
    result = search(HillClimber(SPACE), SPACE, LandscapeEvaluator(), budget=40, start=START)
    doc = summary(result)
    assert doc["best"]["sloMet"] and 0 < doc["costImprovement"] < 1


def test_neighbours_move_one_step_in_each_direction() -> None:
    nbrs = set(SPACE.neighbours(Candidate(2, "medium", 256)))
    assert nbrs == {Candidate(3, "medium", 256), Candidate(1, "medium", 256),
                    Candidate(2, "large", 256), Candidate(2, "small", 256),
                    Candidate(2, "medium", 512), Candidate(2, "medium", 128)}
    assert set(SPACE.neighbours(Candidate(1, "small", 64))) == {
        Candidate(2, "small", 64), Candidate(1, "medium", 64), Candidate(1, "small", 128)}


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        make_search("annealing", SPACE)
    assert exc.value.field == "algorithm"
    with pytest.raises(InvalidInput) as exc:
        SearchSpace((3, 2), ("small",), (64,), {"small": 1.0})
    assert exc.value.field == "nodes"
    with pytest.raises(InvalidInput) as exc:
        search(GridSearch(SPACE), SPACE, LandscapeEvaluator(), budget=0)
    assert exc.value.field == "budget"
