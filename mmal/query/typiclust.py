"""TypiClust (Hacohen, Dekel, Weinshall, 2022, "Active learning on a budget"): typical samples of the
clusters the labeled set covers least."""

from __future__ import annotations

import torch
from sklearn.cluster import KMeans
from torch import Tensor

from mmal.errors import check_int
from mmal.query.base import QueryContext, QueryStrategy, Selection


def typicality(points: Tensor, neighbors: int, chunk: int = 2048) -> Tensor:
    """(n,) inverse mean distance to the ``neighbors`` nearest other points (fewer if n is small)."""
    k = min(neighbors, len(points) - 1)
    if k < 1:
        return torch.ones(len(points), device=points.device)
    dist = torch.cat([torch.cdist(c, points).topk(k + 1, largest=False).values[:, 1:] for c in points.split(chunk)])
    return 1 / dist.mean(1).clamp_min(1e-12)


class TypiClust(QueryStrategy):
    """Cluster the whole pool's fused embeddings into min(|labeled| + k, max_clusters) k-means clusters;
    k times, take the cluster with the fewest labeled (or already chosen) samples among those of at least
    ``min_cluster_size`` (ties: the larger), and label its most typical unlabeled sample.

    Args:
        max_clusters: cap on the number of clusters.
        min_cluster_size: clusters smaller than this are used only when no other has unlabeled samples.
        neighbors: k of the k-nearest-neighbour typicality.
    """

    def __init__(self, max_clusters: int = 500, min_cluster_size: int = 5, neighbors: int = 20):
        self.max_clusters = check_int("query.max_clusters", max_clusters, 1)
        self.min_cluster_size = check_int("query.min_cluster_size", min_cluster_size, 1)
        self.neighbors = check_int("query.neighbors", neighbors, 1)

    def select(self, ctx: QueryContext, k: int) -> Selection:
        points = ctx.predict().fused
        n_clusters = min(int(ctx.labeled.sum()) + k, self.max_clusters, len(points))
        kmeans = KMeans(n_clusters=n_clusters, n_init=1, random_state=ctx.random_state())
        cluster = torch.as_tensor(kmeans.fit_predict(points.cpu().numpy()), device=points.device)
        size = cluster.bincount(minlength=n_clusters)
        taken = ctx.labeled.clone()
        typical: dict[int, Tensor] = {}  # per cluster, computed once: a cluster is often revisited
        picks = []
        for _ in range(k):
            free = (~taken).long().new_zeros(n_clusters).index_add_(0, cluster, (~taken).long())  # (K,)
            covered = size - free
            usable = (free > 0) & (size >= self.min_cluster_size)
            if not usable.any():
                usable = free > 0
            # Fewest covered first, then the largest: one lexicographic key.
            key = covered.double() * (len(points) + 1) - size.double()
            c = int(key.masked_fill(~usable, float("inf")).argmin())
            members = (cluster == c).nonzero().squeeze(1)
            if c not in typical:
                typical[c] = typicality(points[members], self.neighbors)
            score = typical[c].masked_fill(taken[members], float("-inf"))
            pick = members[score.argmax()]
            picks.append(pick)
            taken[pick] = True
        return Selection(torch.stack(picks))
