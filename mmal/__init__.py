"""mmal: a benchmark framework for multimodal active learning (Eisenhardt, Jeong, Buettner, 2026)."""

from mmal.kernels import pin_environment

pin_environment()  # before anything imports torch or numpy: they read it when they start (mmal/kernels.py)

__version__ = "0.1.0"
