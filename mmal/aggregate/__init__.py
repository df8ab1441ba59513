"""The report of a sweep: read every job's results from disk (no network) and write tables, curves with
95 % bands over seeds, and a pairwise comparison of strategies (paired t-tests across seeds per setting,
win/tie/loss counts and the penalty matrix of Ash et al. 2020 as used by Lüth et al. 2023).

    python scripts/aggregate.py <sweep dir> [--out <dir>] [--alpha 0.05] [--focus <strategy>] [--cross <key>]
    (also: mmal-aggregate, python -m mmal.aggregate). The directory may hold several sweeps (e.g. one per
    dataset): every job under it counts.

A *setting* is everything a job's overrides set except the strategy and the seed (e.g. pitfall=synergy,
fusion=late); strategies are compared within a setting, paired by seed. Jobs that are missing, crashed
or unfinished are listed in the report, never dropped silently.

One module per job: ``jobs`` (the sweep on disk), ``statistics`` (the numbers), ``figures`` (the PNGs) and
``report`` (the Markdown, the CSV and the command).
"""

from mmal.aggregate.report import main, write_report

__all__ = ["main", "write_report"]
