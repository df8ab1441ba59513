"""Representative sampling: the unlabeled sample nearest to each k-means centroid."""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from mmal.errors import check_int
from mmal.query.base import QueryContext, QueryStrategy, Selection


def nearest_distinct(points: Tensor, centroids: Tensor, chunk: int = 128) -> Tensor:
    """For each centroid (k, D), the position of its nearest point (n, D), all distinct (a centroid whose
    nearest point is already taken gets its nearest free one). LongTensor (k,); needs n >= k."""
    nearest = torch.cat([torch.cdist(c, points).argmin(1) for c in centroids.split(chunk)])  # (k,)
    taken = torch.zeros(len(points), dtype=torch.bool, device=points.device)
    for j in range(len(centroids)):
        if taken[nearest[j]]:  # rare: two centroids share a nearest point
            d = torch.cdist(centroids[j : j + 1], points)[0].masked_fill(taken, float("inf"))
            nearest[j] = d.argmin()
        taken[nearest[j]] = True
    return nearest


class KMeansSampling(QueryStrategy):
    """k-means (scikit-learn, k = query size) on the fused embeddings of the unlabeled pool; label the
    sample nearest to each centroid.

    Args:
        max_iter: Lloyd iterations of scikit-learn's KMeans.
    """

    def __init__(self, max_iter: int = 100):
        self.max_iter = check_int("query.max_iter", max_iter, 1)

    def select(self, ctx: QueryContext, k: int) -> Selection:
        candidates = ctx.unlabeled
        points = ctx.predict().fused[candidates]
        kmeans = KMeans(n_clusters=k, n_init=1, max_iter=self.max_iter, random_state=ctx.random_state())
        kmeans.fit(points.cpu().numpy())
        centroids = torch.as_tensor(kmeans.cluster_centers_, dtype=points.dtype, device=points.device)
        return Selection(candidates[nearest_distinct(points, centroids)])
