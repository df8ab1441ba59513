"""Which budget-table verdicts changed between two versions of ``docs/results/README.md``: does each study's
conclusion survive a change that moves every number (a regeneration)?

    python scripts/verdict_changes.py <(git show 0aab94b:docs/results/README.md) docs/results/README.md

Reads every table row of the form ``| setting | strategy | cell | cell | cell | cell | holds |`` (what
``scripts/budget_table.py`` writes: AUBC and final ``gap/ensemble`` at two budgets, each cell ending in its
verdict ``+``, ``−`` or ``·``), keyed by section heading, setting and strategy. Per section it prints how many
verdicts of the rows in both files are unchanged, how many turned to the opposite sign (``+`` to ``−`` or back:
a conclusion reversed), and each change.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COLUMNS = ("AUBC at 50", "AUBC at 100", "final at 50", "final at 100")


def verdicts(text: str) -> dict[tuple[str, str, str], list[str]]:
    """(section, setting, strategy) -> the four verdicts of each budget-table row in ``text``."""
    out, section = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section and line.startswith("| ") and not line.startswith(("| setting", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 7 and all(c.endswith(("+", "−", "·")) for c in cells[2:6]):
                out[(section, cells[0], cells[1])] = [c[-1] for c in cells[2:6]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    before, after = verdicts(args.before.read_text()), verdicts(args.after.read_text())
    for section in sorted({key[0] for key in after}):
        rows = [key for key in after if key[0] == section and key in before]
        if not rows:
            print(f"{section}: no row in both files")
            continue
        changes = [(key, column, before[key][column], after[key][column])
                   for key in rows for column in range(4) if before[key][column] != after[key][column]]
        reversed_ = sum({old, new} == {"+", "−"} for _, _, old, new in changes)
        print(f"{section}: {4 * len(rows) - len(changes)} of {4 * len(rows)} verdicts unchanged, "
              f"{reversed_} reversed")
        for (_, setting, strategy), column, old, new in changes:
            print(f"    {setting} | {strategy} | {COLUMNS[column]}: {old} -> {new}")


if __name__ == "__main__":
    main()
