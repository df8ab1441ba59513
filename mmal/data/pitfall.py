"""The pitfall knobs: interaction structure, modality difficulty and missing modalities.

A ``Pitfall`` only holds settings; ``mmal.data.synthetic`` turns them into data, ``mmal.data.real``
applies the ones that make sense to real data, and ``mmal.data.missing`` drops modalities.
Per-modality knobs take one value for every modality or a list with one value per modality (in the
dataset's modality order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

INTERACTIONS = ("redundancy", "uniqueness", "synergy")
MISSING_MECHANISMS = ("mcar", "class", "difficulty")
SPLITS = ("pool", "val", "test")

PerModality = float | Sequence[float]


@dataclass(frozen=True)
class Pitfall:
    """Knobs of one pitfall (DESIGN.md, "The synthetic pitfall generator").

    Args:
        interaction: mixture weights over how the label depends on the modalities, keys from
            ``redundancy`` (every modality sees the class), ``uniqueness`` (one modality per sample
            sees it, drawn with ``unique_probs``), ``synergy`` (label = sum of per-modality digits
            mod num_classes: every proper subset of modalities is at chance). Normalised to sum 1.
        unique_probs: per-modality probability of being the informative one in a uniqueness
            sample; None = uniform.
        noise: per-modality latent noise std (more noise = less information, lower Bayes accuracy).
        separation: per-modality distance of class prototypes from the origin.
        depth: per-modality number of non-linear layers of the random observation map (deeper =
            harder to learn, same information).
        feature_noise: per-modality std (>= 0) of Gaussian noise added to the standardised features
            of that modality, in every split: how modality difficulty is made on *real* data, where
            there is no latent to change. The synthetic generator ignores it and makes difficulty
            through ``noise``, ``separation`` and ``depth``, so that its Bayes ground truth stays exact;
            real data ignores those three (and ``unique_probs``), so one pitfall config can set both.
        missing_rate: per-modality probability in [0, 1) that the modality is missing.
        missing_mechanism: ``mcar`` (independent of everything), ``class`` (rate ramps linearly
            over the classes, opposite directions for alternating modalities) or ``difficulty``
            (samples that are hard in that modality go missing more often).
        missing_strength: in [0, 1], how strongly ``class``/``difficulty`` tilt the rate.
        missing_splits: which of ``pool``, ``val``, ``test`` get missing modalities.

    On real data (``mmal.data.real``) the interaction structure is the data's own: ``uniqueness`` and
    ``synergy`` weights are refused; ``missing_*`` apply on top of any mask the data brings, with the
    ``difficulty`` hardness = distance to the sample's class centroid in that modality.
    """

    interaction: dict[str, float] = field(default_factory=lambda: {"redundancy": 1.0})
    unique_probs: Sequence[float] | None = None
    noise: PerModality = 1.0
    separation: PerModality = 2.0
    depth: PerModality = 1
    feature_noise: PerModality = 0.0
    missing_rate: PerModality = 0.0
    missing_mechanism: str = "mcar"
    missing_strength: float = 1.0
    missing_splits: Sequence[str] = SPLITS

    def per_modality(self, knob: str, num_modalities: int) -> list[float]:
        """Knob ``knob`` expanded to one value per modality."""
        value = getattr(self, knob)
        if isinstance(value, (int, float)):
            return [float(value)] * num_modalities
        return [float(v) for v in value]

    def interaction_weights(self) -> list[float]:
        """Mixture weights in the order of ``INTERACTIONS``, summing to 1."""
        w = [float(self.interaction.get(name, 0.0)) for name in INTERACTIONS]
        return [v / sum(w) for v in w]
