"""Aggregate a sweep directory into a report: python scripts/aggregate.py <sweep dir> [--out DIR]."""

from mmal.aggregate import main

if __name__ == "__main__":
    main()
