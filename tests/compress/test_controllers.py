"""SAController: finds the optimum within its constraint; its state survives JSON and goes on identically."""

from __future__ import annotations

import json

import pytest

from torchslim.compress.controllers import SAController
from torchslim.errors import PruningError

pytestmark = pytest.mark.usefixtures("one_thread")


def quadratic(tokens: list[int]) -> float:
    return -float(sum((t - 7) ** 2 for t in tokens))


def run_controller(controller: SAController, iterations: int, proposals: list) -> None:
    for _ in range(iterations):
        tokens = controller.next_tokens()
        proposals.append(tokens)
        controller.update(tokens, quadratic(tokens))


def make_controller() -> SAController:
    return SAController(
        [(0, 9)] * 4,
        reduce_rate=0.9,
        init_temperature=5.0,
        max_iter_number=150,
        seed=3,
        constrain=lambda t: sum(t) <= 28,
    )


def test_sa_controller_finds_the_optimum_within_the_constraint():
    controller = make_controller()
    controller.reset([0, 0, 0, 0], quadratic([0, 0, 0, 0]))
    proposals: list = []
    run_controller(controller, 150, proposals)
    assert all(sum(t) <= 28 and all(0 <= v <= 9 for v in t) for t in proposals)
    assert controller.best_tokens == [7, 7, 7, 7] and controller.done
    assert controller.temperature == pytest.approx(5.0 * 0.9**150)


def test_sa_controller_state_survives_json_and_continues_identically():
    straight = make_controller()
    straight.reset([1, 2, 3, 4], quadratic([1, 2, 3, 4]))
    expected: list = []
    run_controller(straight, 40, expected)
    first = make_controller()
    first.reset([1, 2, 3, 4], quadratic([1, 2, 3, 4]))
    proposals: list = []
    run_controller(first, 17, proposals)
    state = json.loads(json.dumps(first.state_dict()))
    assert {
        "iteration",
        "temperature",
        "current_tokens",
        "current_reward",
        "best_tokens",
        "best_reward",
        "rng",
    } <= set(state)
    second = make_controller()
    second.load_state_dict(state)
    run_controller(second, 23, proposals)
    assert proposals == expected and second.best_tokens == straight.best_tokens
    other = SAController([(0, 3)] * 4)
    with pytest.raises(PruningError, match="other token ranges"):
        other.load_state_dict(state)
