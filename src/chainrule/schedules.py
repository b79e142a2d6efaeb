"""Learning-rate schedules: ``schedule(t) -> lr``, stepped per epoch or per optimizer step.

Pass a schedule as an optimizer's ``lr``. With ``per="epoch"`` (default) t is the epoch index
that ``fit`` sets on the optimizer (0 for the first epoch); with ``per="step"`` t is the number
of optimizer steps already taken. The formulas match PyTorch's StepLR, ExponentialLR and
CosineAnnealingLR.
"""

from __future__ import annotations

import math

from .registry import Registry
from .validate import construct, number, positive_int

PER = ("epoch", "step")


class Schedule:
    """Base class. Args: initial_lr (the rate at t = 0); per: "epoch" or "step"."""

    def __init__(self, initial_lr: float, per: str = "epoch"):
        if not isinstance(per, str) or per not in PER:
            raise ValueError(f"{type(self).__name__}: per must be one of {PER}, got {per!r}")
        self.initial_lr = number(initial_lr, "initial_lr", type(self).__name__, "> 0")
        self.per = per

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"initial_lr": self.initial_lr, "per": self.per}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class StepDecay(Schedule):
    """lr(t) = initial_lr · gamma^⌊t / step_size⌋."""

    def __init__(self, initial_lr: float, step_size: int, gamma: float = 0.1, per: str = "epoch"):
        super().__init__(initial_lr, per)
        self.step_size = positive_int(step_size, "step_size", "StepDecay")
        self.gamma = number(gamma, "gamma", "StepDecay", "> 0")

    def __call__(self, t):
        return self.initial_lr * self.gamma ** (int(t) // self.step_size)

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "gamma": self.gamma}


class ExponentialDecay(Schedule):
    """lr(t) = initial_lr · gamma^t."""

    def __init__(self, initial_lr: float, gamma: float, per: str = "epoch"):
        super().__init__(initial_lr, per)
        self.gamma = number(gamma, "gamma", "ExponentialDecay", "> 0")

    def __call__(self, t):
        return self.initial_lr * self.gamma ** int(t)

    def get_config(self):
        return {**super().get_config(), "gamma": self.gamma}


class CosineDecay(Schedule):
    """lr(t) = eta_min + (initial_lr − eta_min) · (1 + cos(π t / T_max)) / 2.

    Past T_max the rate stays at eta_min.
    """

    def __init__(self, initial_lr: float, T_max: int, eta_min: float = 0.0, per: str = "epoch"):
        super().__init__(initial_lr, per)
        self.T_max = positive_int(T_max, "T_max", "CosineDecay")
        self.eta_min = number(eta_min, "eta_min", "CosineDecay", ">= 0")

    def __call__(self, t):
        t = min(int(t), self.T_max)
        cos = (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0
        return self.eta_min + (self.initial_lr - self.eta_min) * cos

    def get_config(self):
        return {**super().get_config(), "T_max": self.T_max, "eta_min": self.eta_min}


SCHEDULES = Registry("schedule", expected="known:",
                     entries=[StepDecay, ExponentialDecay, CosineDecay])


def from_config(class_name: str, config: dict) -> Schedule:
    """Rebuild a schedule from its class name and ``get_config()``.

    Raises:
        ValueError: for an unknown class, or a config the constructor does not accept.
    """
    return construct(SCHEDULES.get(class_name), config)
