"""Inference strategies (FDM sampling schemes): which frames to observe and generate at each step."""

from videxp.inference.schedule_plot import plot_schedule
from videxp.inference.strategies import (
    STRATEGIES,
    ScheduleError,
    Step,
    Strategy,
    build_strategy,
    register,
    schedule,
)

__all__ = [
    "STRATEGIES",
    "ScheduleError",
    "Step",
    "Strategy",
    "build_strategy",
    "plot_schedule",
    "register",
    "schedule",
]
