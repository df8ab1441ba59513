"""Training-side balancing methods for the fused model: what ``conf/balance`` configures (docs/balance.md).

Each method is a ``BalanceMethod`` (a ``mmal.hooks.TrainingHook``) that the trainer applies to the fused
model only, never to its unimodal references: a reference measures what a modality gives when trained
alone with plain cross-entropy, the yardstick the neglect measure compares the balanced model with.
"""

from mmal.balance.base import BalanceMethod, modality_logits
from mmal.balance.mla import MLA
from mmal.balance.mmpareto import MMPareto
from mmal.balance.ogm_ge import OGMGE
from mmal.balance.opm import OPM
from mmal.balance.pmr import PMR
from mmal.balance.umt import UMT

__all__ = ["MLA", "MMPareto", "OGMGE", "OPM", "PMR", "UMT", "BalanceMethod", "modality_logits"]
