"""The pitfall knobs: interaction structure, modality difficulty and missing modalities.

A ``Pitfall`` only holds settings; ``mmal.data.synthetic`` turns them into data, ``mmal.data.real``
applies the ones that make sense to real data, and ``mmal.data.missing`` drops modalities.
Per-modality knobs take one value for every modality or a list with one value per modality (in the
dataset's modality order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mmal.errors import ConfigError, check_choice, check_number, check_numbers, check_per_modality, is_number

INTERACTIONS = ("redundancy", "uniqueness", "synergy")
MISSING_MECHANISMS = ("mcar", "class", "difficulty")
SPLITS = ("pool", "val", "test")
SYNTHETIC_ONLY = ("uniqueness", "synergy")
# The per-modality knobs each kind of data uses; the others it ignores, so their lengths are not its business
# (pitfall=modality_difficulty sets feature_noise for real data with two values; a synthetic run with four
# modalities must not be refused over it).
SYNTHETIC_KNOBS = ("noise", "separation", "depth", "missing_rate")
REAL_KNOBS = ("feature_noise", "missing_rate")

PerModality = float | Sequence[float]


@dataclass(frozen=True)
class Pitfall:
    """Knobs of one pitfall (docs/design.md, "The synthetic pitfall generator").

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

    # Every key, so that a config merged over it (Hydra merges mappings key by key) sets each weight it names.
    interaction: dict[str, float] = field(default_factory=lambda: {name: float(name == "redundancy")
                                                                   for name in INTERACTIONS})
    unique_probs: Sequence[float] | None = None
    noise: PerModality = 1.0
    separation: PerModality = 2.0
    depth: PerModality = 1
    feature_noise: PerModality = 0.0
    missing_rate: PerModality = 0.0
    missing_mechanism: str = "mcar"
    missing_strength: float = 1.0
    missing_splits: Sequence[str] = SPLITS

    def __post_init__(self):
        weights = self.interaction
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError("pitfall.interaction", weights, f"a mapping with keys from {list(INTERACTIONS)}")
        for name, weight in weights.items():
            if name not in INTERACTIONS:
                raise ConfigError(f"pitfall.interaction.{name}", weight, f"keys must be from {list(INTERACTIONS)}")
            check_number(f"pitfall.interaction.{name}", weight, 0)
        if sum(weights.values()) <= 0:
            raise ConfigError("pitfall.interaction", weights, "weights must not all be zero")
        check_per_modality("pitfall.noise", self.noise, None, 0, strict=True)
        check_per_modality("pitfall.separation", self.separation, None, 0)
        check_per_modality("pitfall.depth", self.depth, None, 0, integer=True)
        check_per_modality("pitfall.feature_noise", self.feature_noise, None, 0)
        check_per_modality("pitfall.missing_rate", self.missing_rate, None, 0, below=1)
        check_choice("pitfall.missing_mechanism", self.missing_mechanism, MISSING_MECHANISMS)
        check_number("pitfall.missing_strength", self.missing_strength, 0, maximum=1)
        splits = self.missing_splits
        if isinstance(splits, str) or not isinstance(splits, Sequence) or any(s not in SPLITS for s in splits):
            raise ConfigError("pitfall.missing_splits", splits, f"a list with items from {list(SPLITS)}")
        if self.unique_probs is not None:
            check_numbers("pitfall.unique_probs", self.unique_probs, None, 0, positive_sum=True)

    def per_modality(self, knob: str, modalities: Sequence[str]) -> list[float]:
        """Knob ``knob`` with one value per modality of ``modalities`` (the dataset's names, in order); a
        list of another length is a config error."""
        value = getattr(self, knob)
        if is_number(value):
            return [float(value)] * len(modalities)
        if len(value) != len(modalities):
            raise ConfigError(f"pitfall.{knob}", value, f"one value, or a list with one per modality "
                                                        f"({len(modalities)} modalities: {list(modalities)})")
        return [float(v) for v in value]

    def check_real_data(self) -> None:
        """Refuse interaction structures that only the synthetic generator can make."""
        if any(self.interaction.get(k, 0) > 0 for k in SYNTHETIC_ONLY):  # weights checked in __post_init__
            raise ConfigError("pitfall.interaction", dict(self.interaction),
                              "uniqueness and synergy are synthetic-only pitfalls (real data has its own interaction "
                              "structure); on real data use pitfall=none, modality_difficulty or missing_modality")

    def interaction_weights(self) -> list[float]:
        """Mixture weights in the order of ``INTERACTIONS``, summing to 1."""
        w = [float(self.interaction.get(name, 0.0)) for name in INTERACTIONS]
        return [v / sum(w) for v in w]

    def check_modalities(self, modalities: Sequence[str], knobs: Sequence[str]) -> None:
        """Every per-modality list among ``knobs`` (``SYNTHETIC_KNOBS`` or ``REAL_KNOBS``: what the data uses)
        has one value per modality of ``modalities``; so has ``unique_probs`` for synthetic data."""
        for knob in knobs:
            self.per_modality(knob, modalities)
        if knobs == SYNTHETIC_KNOBS and self.unique_probs is not None:
            check_numbers("pitfall.unique_probs", self.unique_probs, len(modalities), 0, positive_sum=True)
