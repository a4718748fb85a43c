"""The SD1.x-vs-SDXL latent warning is never wrong on real encoded images (other images than the bench's)."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, TRAIN_IMAGES, VAE_APPROX

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.skipif(
    not (TRAIN_IMAGES.is_dir() and (VAE_APPROX / "taesd_encoder.safetensors").is_file()),
    reason="needs ../shared/data/train and ../shared/vae_approx",
)


def test_warning_rule_never_names_the_wrong_family():
    from latent_family_stats import all_images, encode_all, pick_images

    from nodes.latent_family import looks_like

    calibration = set(pick_images(60)) | set(pick_images(60, offset=7))  # the bench's two sets
    rest = [p for p in all_images() if p not in calibration]  # images the thresholds were not set on
    images = rest[3 :: len(rest) // 6][:6]
    feats = encode_all(images, side=256)
    calls = {fam: [looks_like(f) for f in rows] for fam, rows in feats.items()}
    assert "sdxl" not in calls["sd1"] and "sd1" not in calls["sdxl"], calls
    assert calls["sd1"].count("sd1") + calls["sdxl"].count("sdxl") >= 1, f"the rule never fires: {calls}"


def test_noise_and_empty_latents_get_no_call():
    import torch

    from nodes.latent_family import latent_features, looks_like

    assert looks_like(latent_features(torch.zeros(1, 4, 16, 16))) is None
    assert looks_like(latent_features(torch.randn(1, 4, 16, 16))) is None
