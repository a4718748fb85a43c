"""Tell an SD1.x latent from an SDXL one where the statistics allow it (both have 4 channels).

Measured by bench/latent_family_stats.py (bench/results/latent-family-stats.json): real images encoded
with taesd (SD1.x) and taesdxl (SDXL). No single statistic separates the two families for every image,
so `looks_like` answers only in the zones where one family never went in that measurement (with a
margin) and stays silent (None) otherwise: a warning is then always right, but most latents get none.
"""

from __future__ import annotations

import torch

FEATURES = ("std", "corr12", "corr13")
MIN_STD = 2.0  # below this the latent is empty or noise-like (no encoded image measured was), so no call

# Zones where only one family went, over 120 images in two disjoint sets of 60 (256 px; see the bench):
# SD1.x std 3.35-8.18, corr12 -0.84-0.49, corr13 -0.88-0.43; SDXL std 4.34-10.23, corr12 -0.67-0.17,
# corr13 -0.40-0.74. Each bound sits about 10% (std) or 0.08-0.12 (correlations) beyond the other
# family's extreme: the first set alone had narrower tails, and tighter bounds set on it misfired on the second.
CLEARLY_SDXL = {"std": (">", 9.0), "corr13": (">", 0.55)}
CLEARLY_SD1 = {"std": ("<", 4.0), "corr12": ("<", -0.75), "corr13": ("<", -0.5)}


def latent_features(latent: torch.Tensor) -> dict[str, float]:
    """Overall std and two channel correlations of a 4-channel raw latent [B, 4, (T,) h, w]."""
    z = latent.detach().float().movedim(1, 0).reshape(latent.shape[1], -1)
    corr = torch.corrcoef(z)
    return {
        "std": float(z.std()),
        "corr12": float(corr[1, 2].nan_to_num(0.0)),
        "corr13": float(corr[1, 3].nan_to_num(0.0)),
    }


def _hits(features: dict[str, float], zones: dict[str, tuple[str, float]]) -> bool:
    return any((features[k] > v) if op == ">" else (features[k] < v) for k, (op, v) in zones.items())


def looks_like(features: dict[str, float]) -> str | None:
    """'sd1' or 'sdxl' where the features sit in one family's zone only, else None (cannot tell)."""
    if features["std"] < MIN_STD:
        return None
    sdxl, sd1 = _hits(features, CLEARLY_SDXL), _hits(features, CLEARLY_SD1)
    if sdxl == sd1:
        return None
    return "sdxl" if sdxl else "sd1"
