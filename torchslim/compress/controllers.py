"""Search controllers: propose token vectors, learn from their rewards, and survive a restart.

Each controller is registered under the YAML class name of its config; :func:`build_controller`
builds the one a config entry names. :class:`SAController` is the seed's simulated annealing: it
proposes a neighbour of the current tokens (one token changed; a second one changed to restore the
constraint if needed), moves there when the reward is higher or with probability
``exp((reward - current) / T)``, ``T = init_temperature * reduce_rate ** iteration``. Its whole
state, random generator included, is JSON data, so a restarted search proposes the same candidates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from torchslim.config import SAControllerConfig
from torchslim.errors import PruningError
from torchslim.registry import Registry

Tokens = list[int]
CONTROLLERS: Registry[type] = Registry("controller class")


def build_controller(config: Any, range_table: Sequence[tuple[int, int]], *, seed: int = 0):
    """The controller a ``controllers.<name>`` entry describes, over tokens in ``range_table``."""
    return CONTROLLERS.get(type(config).class_name).from_config(config, range_table, seed=seed)


@CONTROLLERS.register(SAControllerConfig.class_name)
class SAController:
    """Simulated annealing over integer tokens, token ``i`` in ``range_table[i] = (low, high)`` inclusive."""

    def __init__(
        self,
        range_table: Sequence[tuple[int, int]],
        *,
        reduce_rate: float = 0.9,
        init_temperature: float = 100.0,
        max_iter_number: int = 300,
        seed: int = 0,
        constrain: Callable[[Tokens], bool] | None = None,
        max_tries: int = 200,
    ) -> None:
        self.range_table = [(int(lo), int(hi)) for lo, hi in range_table]
        if any(lo > hi for lo, hi in self.range_table):
            raise PruningError(f"token ranges must have low <= high, got {self.range_table}")
        self.reduce_rate = reduce_rate
        self.init_temperature = init_temperature
        self.max_iter_number = max_iter_number
        self.constrain = constrain or (lambda tokens: True)
        self.max_tries = max_tries
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.iteration = 0  # candidates evaluated after the initial tokens
        self.current_tokens: Tokens | None = None
        self.current_reward: float | None = None
        self.best_tokens: Tokens | None = None
        self.best_reward: float | None = None
        self.accepted = 0

    @classmethod
    def from_config(
        cls, config: SAControllerConfig, range_table: Sequence[tuple[int, int]], *, seed: int = 0
    ) -> SAController:
        return cls(
            range_table,
            reduce_rate=config.reduce_rate,
            init_temperature=config.init_temperature,
            max_iter_number=config.max_iter_number,
            seed=seed,
        )

    # -- the search --------------------------------------------------------------------------
    @property
    def temperature(self) -> float:
        return self.init_temperature * self.reduce_rate**self.iteration

    @property
    def started(self) -> bool:
        return self.current_tokens is not None

    @property
    def done(self) -> bool:
        return self.iteration >= self.max_iter_number

    def reset(self, tokens: Sequence[int], reward: float) -> None:
        """Start from ``tokens`` whose reward is known."""
        tokens = self._checked(tokens)
        self.current_tokens, self.current_reward = list(tokens), float(reward)
        self.best_tokens, self.best_reward = list(tokens), float(reward)
        self.iteration = 0
        self.accepted = 0

    def next_tokens(self) -> Tokens:
        """A neighbour of the current tokens that satisfies the constraint (else the current ones)."""
        if self.current_tokens is None:
            raise PruningError("SAController.next_tokens() before reset(): no current tokens")
        mutable = [i for i, (lo, hi) in enumerate(self.range_table) if hi > lo]
        if not mutable:
            return list(self.current_tokens)
        for _ in range(self.max_tries):
            tokens = list(self.current_tokens)
            index = mutable[int(self.rng.integers(len(mutable)))]
            tokens[index] = self._other_value(index, tokens[index])
            if self.constrain(tokens):
                return tokens
            repaired = self._repair(tokens, index)
            if repaired is not None:
                return repaired
        return list(self.current_tokens)

    def update(self, tokens: Sequence[int], reward: float) -> bool:
        """Record the reward of ``tokens``; True when the search moved there."""
        if self.current_reward is None:
            raise PruningError("SAController.update() before reset()")
        tokens, reward = list(tokens), float(reward)
        self.iteration += 1
        temperature = max(self.temperature, 1e-12)
        accept = reward > self.current_reward or self.rng.random() < math.exp(
            (reward - self.current_reward) / temperature
        )
        if accept:
            self.current_tokens, self.current_reward = tokens, reward
            self.accepted += 1
        if reward > self.best_reward:
            self.best_tokens, self.best_reward = tokens, reward
        return accept

    def _other_value(self, index: int, value: int) -> int:
        lo, hi = self.range_table[index]
        new = int(self.rng.integers(lo, hi))  # lo .. hi-1, shifted past ``value`` to exclude it
        return new + 1 if new >= value else new

    def _repair(self, tokens: Tokens, changed: int) -> Tokens | None:
        """Change one other random token to a random value that satisfies the constraint, if there is one."""
        others = [i for i, (lo, hi) in enumerate(self.range_table) if hi > lo and i != changed]
        if not others:
            return None
        index = others[int(self.rng.integers(len(others)))]
        lo, hi = self.range_table[index]
        for value in self.rng.permutation(np.arange(lo, hi + 1)):
            candidate = list(tokens)
            candidate[index] = int(value)
            if self.constrain(candidate):
                return candidate
        return None

    def _checked(self, tokens: Sequence[int]) -> Tokens:
        tokens = [int(t) for t in tokens]
        if len(tokens) != len(self.range_table):
            raise PruningError(f"expected {len(self.range_table)} tokens, got {len(tokens)}")
        for i, (token, (lo, hi)) in enumerate(zip(tokens, self.range_table, strict=True)):
            if not lo <= token <= hi:
                raise PruningError(f"token {i} = {token} is outside its range [{lo}, {hi}]")
        return tokens

    # -- resumable state -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data: iteration, temperature, current / best tokens and rewards, the RNG state."""
        return {
            "iteration": self.iteration,
            "temperature": self.temperature,
            "accepted": self.accepted,
            "range_table": [list(r) for r in self.range_table],
            "current_tokens": self.current_tokens,
            "current_reward": self.current_reward,
            "best_tokens": self.best_tokens,
            "best_reward": self.best_reward,
            "rng": _rng_state(self.rng),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ranges = [tuple(r) for r in state.get("range_table", [])]
        if ranges and ranges != self.range_table:
            raise PruningError(
                "the saved search state is for other token ranges (the model's groups changed); "
                "start the search afresh with another checkpoint path"
            )
        self.iteration = int(state["iteration"])
        self.accepted = int(state.get("accepted", 0))
        self.current_tokens = state["current_tokens"]
        self.current_reward = state["current_reward"]
        self.best_tokens = state["best_tokens"]
        self.best_reward = state["best_reward"]
        self.rng.bit_generator.state = _rng_from_json(state["rng"])


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """PCG64's state as JSON-able data (its 128-bit integers as decimal strings)."""
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": {k: str(v) for k, v in state["state"].items()},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _rng_from_json(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "bit_generator": data["bit_generator"],
        "state": {k: int(v) for k, v in data["state"].items()},
        "has_uint32": int(data["has_uint32"]),
        "uinteger": int(data["uinteger"]),
    }
