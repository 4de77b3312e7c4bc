"""`ccfm train`'s options for its knobs (split fold, model, flow sources, objective), one typed alias each.

Kept apart from cli.py so the command's signature reads as one line per knob; the defaults stay at the command
(they equal TrainConfig's) and the values are checked by TrainConfig.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ccfm.config import MODEL_PRESETS

LatentFirstProb = Annotated[float, typer.Option(help="Share of samples that train the latent stream.")]
TLatentForExpr = Annotated[str, typer.Option(help="t_latent of expression samples: clean (1) or late (U(0.75, 1)).")]
LatentWeight = Annotated[float, typer.Option(help="Weight of the latent loss.")]
LatentTarget = Annotated[
    str,
    typer.Option(
        help="What the latent head predicts: clean (the clean latent), residual (the clean latent minus the "
        "latent prior; needs --latent-source prior) or velocity."
    ),
]
LatentPca = Annotated[
    int, typer.Option(help="PCA components per gene the latent flows as (0, or ≥ the store's D: all D).")
]
LatentSource = Annotated[
    str, typer.Option(help="The latent flow's z0: prior (control + code shifts of singles) or noise.")
]
LatentSourceNoise = Annotated[float, typer.Option(help="Std of the noise added to the latent prior.")]
LatentPriorTokens = Annotated[bool, typer.Option(help="Latent prior: tokens also read its mean code, apart from z_t.")]
LatentResidualWeight = Annotated[float, typer.Option(help="Penalty on the latent's learned residual over its prior.")]
Source = Annotated[str, typer.Option(help="The flow's x0: prior (control + Δ of singles), control, noise.")]
SourceNoise = Annotated[float, typer.Option(help="Std of the noise added to the prior/control source.")]
PertCells = Annotated[int, typer.Option(help="Cells per perturbation in a batch (mixes batch // this).")]
ResidualWeight = Annotated[float, typer.Option(help="Penalty on the learned residual over the prior.")]
TargetFlag = Annotated[bool, typer.Option(help="Perturbed genes' tokens carry a target vector.")]
ShiftTokens = Annotated[bool, typer.Option(help="Tokens read their gene's prior shift.")]
InteractionHead = Annotated[
    bool, typer.Option(help="Prior source: fit the doubles' interaction on genes both components move.")
]
Coupling = Annotated[str, typer.Option(help="Source-target pairing: independent or ot.")]
Fold = Annotated[int, typer.Option(help="Fold 0-9: the i-th seeded draw of the held-out set (fixed splits: 0 only).")]
CfgDropout = Annotated[
    float, typer.Option(help="Share of samples trained without their perturbation label (> 0 enables guidance).")
]
Preset = Annotated[str, typer.Option(help=f"Model preset: {' or '.join(MODEL_PRESETS)}.")]
Latent = Annotated[str, typer.Option(help="scgpt (cascaded) or none (the scDFM-equivalent ablation).")]
LatentLoss = Annotated[
    str, typer.Option(help="Latent MSE on velocities, or on the clean latent the head implies (every time alike).")
]
