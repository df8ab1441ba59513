"""BADGE (Ash et al., 2020): k-means++ seeding on last-layer gradient embeddings with hallucinated labels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from mmal.query.base import QueryContext, QueryStrategy, Selection
from mmal.query.selection import kmeanspp_factored


def gradient_factor(probs: Tensor) -> Tensor:
    """(N, C) p - onehot(argmax p): the loss gradient w.r.t. the logits when the predicted class is taken as
    the label. The gradient embedding w.r.t. the last linear layer is its outer product with that layer's
    input, so distances between gradient embeddings factorise (``kmeanspp_factored``)."""
    return probs - F.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)


class Badge(QueryStrategy):
    """k-means++ seeding over the unlabeled gradient embeddings (p - onehot(y_hat)) ⊗ fused, never
    materialised: each step costs O(N (C + D)). As in the authors' code (JordanAsh/badge, ``init_centers``)
    the first centre is the embedding of largest norm and the others are D²-sampled."""

    def select(self, ctx: QueryContext, k: int) -> Selection:
        pred = ctx.predict()
        return Selection(kmeanspp_factored(gradient_factor(pred.probs), pred.fused, k, ctx.generator,
                                           candidates=~ctx.labeled))
