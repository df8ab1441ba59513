from mmal.query.badge import Badge
from mmal.query.base import QueryContext, QueryStrategy, ScoringStrategy, Selection, top_k, top_unexcluded
from mmal.query.bmmal import BMMAL
from mmal.query.coreset import Coreset, MultimodalCoreset
from mmal.query.deepfool import DeepFool
from mmal.query.deficit_bmmal import DeficitBMMAL
from mmal.query.ensemble import EnsembleBadge, EnsembleDisagreement
from mmal.query.gap import GapSplit
from mmal.query.kmeans import KMeansSampling
from mmal.query.multimodal import Disagreement, ModalityEntropy
from mmal.query.pattern_badge import PatternBadge
from mmal.query.random import RandomSampling
from mmal.query.typiclust import TypiClust
from mmal.query.uncertainty import BALD, Entropy, LeastConfidence, Margin

__all__ = ["BALD", "BMMAL", "Badge", "Coreset", "DeepFool", "DeficitBMMAL", "Disagreement", "EnsembleBadge",
           "EnsembleDisagreement", "Entropy", "GapSplit", "KMeansSampling", "LeastConfidence", "Margin",
           "ModalityEntropy", "MultimodalCoreset", "PatternBadge", "QueryContext", "QueryStrategy", "RandomSampling",
           "ScoringStrategy", "Selection", "TypiClust", "top_k", "top_unexcluded"]
