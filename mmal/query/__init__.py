from mmal.query.base import QueryContext, QueryStrategy, ScoringStrategy, top_k
from mmal.query.random import RandomSampling
from mmal.query.uncertainty import Entropy, LeastConfidence, Margin

__all__ = ["Entropy", "LeastConfidence", "Margin", "QueryContext", "QueryStrategy", "RandomSampling",
           "ScoringStrategy", "top_k"]
