"""KL controllers: a fixed coefficient, or Ziegler et al.'s adaptive one (lm-human-preferences)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """beta never changes."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, d: dict) -> None:
        self.value = float(d["value"])


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: move beta towards the KL target, proportionally.

    ``error = clip(KL / target - 1, -0.2, 0.2)``; ``beta *= 1 + error * n_steps / horizon``,
    where ``n_steps`` is the number of episodes in the batch that measured ``KL`` (per sample, nats).

    ``minimum`` (not in Ziegler's controller): beta never falls below it. While the KL is still climbing towards
    its target a short horizon otherwise halves beta in a few dozen steps, and the KL then runs far past the
    target before beta can catch up (docs/ppo.md, 3 Dec).
    """

    value: float
    target: float
    horizon: int
    minimum: float = 0.0

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value = max(self.value * (1.0 + error * n_steps / self.horizon), self.minimum)
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, d: dict) -> None:
        self.value = float(d["value"])


def make_kl_controller(init_kl_coef: float, target: float | None, horizon: int | None, minimum: float | None = None):
    """Fixed beta without a target; else the adaptive controller, never below ``minimum`` (None: no floor) or
    below a smaller start (``--set init_kl_coef=0.05`` on a profile whose floor is 0.1 starts and stays >= 0.05)."""
    if target is None:
        return FixedKLController(init_kl_coef)
    if horizon is None:
        raise ValueError("an adaptive KL controller needs a horizon")
    return AdaptiveKLController(init_kl_coef, target, horizon, min(minimum or 0.0, init_kl_coef))
