"""The AL protocol's settings (``conf/al``): how many labels to start with, to ask for per round, and how
many rounds. Typed: this dataclass is the base of ``conf/al/*.yaml`` (``mmal.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from mmal.errors import check_choice, check_int


@dataclass
class ALProtocol:
    """``cycles`` query rounds, so ``cycles + 1`` trainings (cycle 0 on the initial set); the budget is
    ``initial_size + cycles * query_size`` labels, at most the pool (``mmal.config.check_budget``).

    Args:
        initial_size: labeled samples at cycle 0, drawn from the seed (the same for every strategy).
        query_size: samples labeled per query round (b).
        cycles: query rounds.
        warm_start: False retrains every cycle from the same initial weights; True continues from the
            previous cycle's weights.
    """

    initial_size: int = 20
    query_size: int = 20
    cycles: int = 10
    warm_start: bool = False

    def __post_init__(self):
        check_int("al.initial_size", self.initial_size, 1)
        check_int("al.query_size", self.query_size, 1)
        check_int("al.cycles", self.cycles, 0)
        check_choice("al.warm_start", self.warm_start, [True, False])

    @property
    def budget(self) -> int:
        return self.initial_size + self.cycles * self.query_size
