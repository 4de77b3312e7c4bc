"""The space the latent stream flows in, and where its flow starts.

- Codes: with `latent_pca = k > 0` each gene's D-dim scGPT feature is reduced to k numbers by a per-gene PCA
  fitted on training cells (fit_gene_pca): code = (z − mean_g) · basis_g, and decoded back by
  mean_g + code · basis_gᵀ where a full latent is needed. A network of width H then generates k ≪ D numbers
  per gene, not D. With k = 0 the code is the (normalized) feature itself.
- Source z0: `noise` (N(0, I), Latent Forcing) or `prior`: the control cells' mean code plus the composed code
  shift of the perturbation's components (each token's training single's mean code minus the controls'; a token
  without a training single gets the mean over training perturbations), plus σ·ε — the latent twin of the
  expression stream's prior source (ccfm/model/source.py).
All tables are buffers (saved in the run's checkpoints), set before training.

Shapes: B cells, G genes (the panel is the first G ids), D scGPT width, K code width (k, or D), T tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ccfm.config import LATENT_SOURCES
from ccfm.errors import CCFMError


class LatentSpace(nn.Module):
    def __init__(self, n_panel: int, n_tokens: int, d: int, k: int, source: str, noise_std: float) -> None:
        super().__init__()
        if source not in LATENT_SOURCES:
            raise CCFMError(f"latent_source must be one of {', '.join(LATENT_SOURCES)}; got {source!r}")
        self.d, self.k, self.kind, self.noise_std = d, k, source, noise_std
        self.width = k if k > 0 else d
        pca, prior = k > 0, source == "prior"
        # Tables a model does not use are not saved, so runs from before the latent space load as they were.
        self.register_buffer("mean", torch.zeros(n_panel, d) if pca else torch.zeros(0, 0), persistent=pca)  # (G, D)
        self.register_buffer("basis", torch.zeros(n_panel, d, k) if pca else torch.zeros(0, 0, 0), persistent=pca)
        self.register_buffer(
            "control", torch.zeros(n_panel, self.width) if prior else torch.zeros(0, 0), persistent=prior
        )
        # Shifts are stored once per perturbation token with a training single, plus row 0 (the mean shift, for
        # every other token): (R, G, K) with R ≈ the perturbations, not (T, G, K) over the whole gene vocabulary.
        self.register_buffer("token_row", torch.zeros(n_tokens if prior else 0, dtype=torch.long), persistent=prior)
        shift = torch.zeros(1, n_panel, self.width) if prior else torch.zeros(0, 0, 0)
        self.register_buffer("shift", shift, persistent=prior)  # (R, G, K)

    @property
    def has_pca(self) -> bool:
        return self.k > 0

    def set_pca(self, mean: Tensor, basis: Tensor) -> None:
        """mean: (G, D), basis: (G, D, K) orthonormal columns per gene (fit_gene_pca)."""
        _copy(self.mean, mean, "latent PCA mean")
        _copy(self.basis, basis, "latent PCA basis")

    def set_prior(self, control: Tensor, shift: Tensor, token_row: Tensor) -> None:
        """control: (G, K) the control cells' mean code; shift: (R, G, K) mean code shifts, row 0 the default;
        token_row: (T,) long, each token's row in `shift`."""
        _copy(self.control, control, "latent prior control code")
        _copy(self.token_row, token_row, "latent prior token rows")
        if shift.ndim != 3 or tuple(shift.shape[1:]) != tuple(self.shift.shape[1:]):
            raise CCFMError(
                f"latent prior shift table has shape {tuple(shift.shape)}, expected (R, *{tuple(self.shift.shape[1:])})"
            )
        if int(token_row.max()) >= shift.shape[0] or int(token_row.min()) < 0:
            raise CCFMError(f"latent prior token rows must index the {shift.shape[0]} rows of the shift table")
        self.shift = shift.to(self.shift)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        """The shift table has as many rows as the run's perturbations: take the saved size."""
        saved = state_dict.get(prefix + "shift")
        if saved is not None and saved.ndim == 3 and saved.shape[1:] == self.shift.shape[1:]:
            self.shift = torch.empty_like(saved, device=self.shift.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode(self, z: Tensor, genes: Tensor) -> Tensor:
        """Codes (B, G', K) of full latents z (B, G', D) on `genes` (G',) panel ids."""
        if not self.has_pca:
            return z
        centred = z.float() - self.mean[genes]  # (B, G', D)
        return torch.einsum("bgd,gdk->bgk", centred, self.basis[genes])  # (B, G', K)

    def decode(self, code: Tensor, genes: Tensor) -> Tensor:
        """Full latents (B, G', D) of codes (B, G', K) on `genes` (G',)."""
        if not self.has_pca:
            return code
        return self.mean[genes] + torch.einsum("bgk,gdk->bgd", code, self.basis[genes])  # (B, G', D)

    def prior_code(self, pert: Tensor, genes: Tensor) -> Tensor:
        """(B, G', K) control code + Σ over filled slots of the tokens' code shifts. pert: (B, P), −1 empty."""
        filled = pert >= 0  # (B, P)
        rows = self.shift[self.token_row[torch.where(filled, pert, 0)]][:, :, genes]  # (B, P, G', K)
        rows = rows * filled[..., None, None].to(rows.dtype)
        return self.control[genes] + rows.sum(dim=1)  # (B, G', K)

    def source(self, pert: Tensor, genes: Tensor, noise: Tensor) -> Tensor:
        """z0 (B, G', K) from the perturbation tokens and noise (B, G', K)."""
        if self.kind == "noise":
            return noise
        return self.prior_code(pert, genes) + self.noise_std * noise


def _copy(buffer: Tensor, value: Tensor, what: str) -> None:
    if tuple(value.shape) != tuple(buffer.shape):
        raise CCFMError(f"{what} has shape {tuple(value.shape)}, expected {tuple(buffer.shape)}")
    buffer.copy_(value)


class GenePCA:
    """Streaming per-gene second moments of latents, then the top-k eigenvectors per gene."""

    def __init__(self, n_genes: int, d: int) -> None:
        self.n = 0
        self.sum = torch.zeros(n_genes, d, dtype=torch.float64)  # (G, D)
        self.outer = torch.zeros(n_genes, d, d, dtype=torch.float32)  # (G, D, D)

    def add(self, z: Tensor) -> None:
        """z: (B, G, D) full latents of B cells (uncovered positions included: their zeros are part of the code)."""
        z = z.float()
        self.n += z.shape[0]
        self.sum += z.sum(dim=0).double()
        self.outer += torch.einsum("bgd,bge->gde", z, z)

    def fit(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """(mean (G, D), basis (G, D, k), explained (G,) share of each gene's variance the k components keep)."""
        if self.n < 2:
            raise CCFMError(f"the latent PCA needs at least 2 cells; got {self.n}")
        mean = (self.sum / self.n).float()  # (G, D)
        cov = self.outer.double() / self.n - torch.einsum("gd,ge->gde", mean.double(), mean.double())  # (G, D, D)
        values, vectors = torch.linalg.eigh(cov)  # ascending
        top = vectors[..., -k:].flip(-1).float()  # (G, D, k)
        total = values.clamp_min(0).sum(-1)
        explained = (values[..., -k:].clamp_min(0).sum(-1) / total.clamp_min(1e-12)).float()  # (G,)
        return mean, top, explained
