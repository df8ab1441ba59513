"""python -m mmal.aggregate <sweep dir> ...: the report's command (mmal.aggregate.report.main)."""

from mmal.aggregate.report import main

main()
