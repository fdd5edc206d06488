"""Flexible Diffusion Models (Harvey et al. 2022): video UNet, Gaussian diffusion, checkpoints."""
