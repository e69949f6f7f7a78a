"""Generated datasets: Gaussian vectors or tensors, and synthetic natural-looking images."""

from __future__ import annotations

import math

import torch
from pydantic import Field

from suite.data.registry import Dataset, register_dataset
from suite.spec.base import SpecModel

__all__ = ["GaussianParams", "SyntheticImagesParams", "gaussian", "synthetic_images"]


class GaussianParams(SpecModel):
    """``n`` i.i.d. samples of shape ``shape`` from N(mean, std^2)."""

    shape: list[int] = Field(..., min_length=1, description="Shape of one sample, e.g. [64] or [3, 32, 32].")
    n: int = Field(..., ge=1, description="Number of samples.")
    mean: float = 0.0
    std: float = Field(1.0, gt=0.0)


@register_dataset(GaussianParams)
def gaussian(params: GaussianParams, seed: int) -> Dataset:
    """Gaussian noise: ``x_i ~ N(mean, std^2 I)`` drawn from a generator seeded with the case seed."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((params.n, *params.shape), generator=gen) * params.std + params.mean
    return Dataset(inputs=x, info={"source": "gaussian", "n": params.n, "shape": params.shape, "seed": seed})


class SyntheticImagesParams(SpecModel):
    """Images built from random smooth fields and oriented gratings, normalised per channel."""

    shape: list[int] = Field([3, 32, 32], min_length=3, max_length=3, description="[C, H, W].")
    n: int = Field(..., ge=1)
    n_classes: int = Field(10, ge=1, description="Labels are assigned round-robin.")


@register_dataset(SyntheticImagesParams)
def synthetic_images(params: SyntheticImagesParams, seed: int) -> Dataset:
    """Synthetic images: a low-pass random field (1/f^2 power spectrum) plus a sinusoidal grating per image.

    Natural images have roughly 1/f^2 power spectra, so these exercise networks with spatially correlated
    inputs unlike white noise. Each channel is standardised to zero mean and unit variance.
    """
    c, h, w = params.shape
    gen = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(h).reshape(h, 1)
    fx = torch.fft.rfftfreq(w).reshape(1, -1)
    radius = torch.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = 1.0 / radius  # power ~ 1/f^2
    amplitude[0, 0] = 0.0
    noise = torch.randn((params.n, c, h, w // 2 + 1, 2), generator=gen)
    field = torch.fft.irfft2(torch.view_as_complex(noise) * amplitude, s=(h, w))
    angle = torch.rand(params.n, generator=gen) * math.pi
    freq = 1.0 + torch.rand(params.n, generator=gen) * 4.0
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    phase = (torch.cos(angle)[:, None, None] * xx + torch.sin(angle)[:, None, None] * yy) * freq[:, None, None]
    grating = torch.sin(2 * math.pi * phase)[:, None]
    images = field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12) + 0.5 * grating
    images = (images - images.mean(dim=(0, 2, 3), keepdim=True)) / images.std(dim=(0, 2, 3), keepdim=True)
    targets = torch.arange(params.n) % params.n_classes
    return Dataset(inputs=images.float(), targets=targets, info={"source": "synthetic_images", "n": params.n, "seed": seed})
