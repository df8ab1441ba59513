"""mmal: a benchmark framework for multimodal active learning (Eisenhardt, Jeong, Buettner, 2026)."""

__version__ = "0.1.0"
