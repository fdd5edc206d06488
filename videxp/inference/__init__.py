"""Inference strategies (FDM sampling schemes): which frames to observe and generate at each step."""

from videxp.inference.schedule_plot import plot_schedule
from videxp.inference.strategies import (
    SETTINGS,
    STRATEGIES,
    ScheduleError,
    Step,
    Strategy,
    build_strategy,
    register,
    schedule,
    schedule_for,
)

__all__ = [
    "SETTINGS",
    "STRATEGIES",
    "ScheduleError",
    "Step",
    "Strategy",
    "build_strategy",
    "plot_schedule",
    "register",
    "schedule",
    "schedule_for",
]
