"""Which target cell each source sample flows to.

`independent` pairs them as they were drawn (scDFM). `ot` pairs them, within each perturbation of the batch, by
minibatch optimal transport: the assignment that minimizes the summed squared distance between each source x0 and
its target x1 (Tong et al. 2023, OT-CFM). Source and target cells of a perturbation are unpaired draws, so any
pairing is valid; the OT one asks the network for shorter, less crossing paths — a velocity it can predict from
the source cell it sees instead of the average over all targets.

Shapes: B cells, G genes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor


def ot_pairing(x0: Tensor, x1: Tensor, groups: Tensor | None) -> Tensor:
    """(B,) long permutation `perm` such that x1[perm] is paired with x0 by OT within each group.

    x0, x1: (B, G); groups: (B,) long perturbation index of each cell (None: one perturbation). Cells keep
    their group: the permutation only reorders targets among cells of the same perturbation.
    """
    b = x0.shape[0]
    groups = torch.zeros(b, dtype=torch.long, device=x0.device) if groups is None else groups
    perm = torch.arange(b, device=x0.device)
    cost = torch.cdist(x0.detach().float(), x1.detach().float()).pow(2).cpu().numpy()  # (B, B)
    labels = groups.cpu().numpy()
    for group in np.unique(labels):
        rows = np.flatnonzero(labels == group)
        source, target = linear_sum_assignment(cost[np.ix_(rows, rows)])
        perm[torch.from_numpy(rows[source]).to(x0.device)] = torch.from_numpy(rows[target]).to(x0.device)
    return perm
