"""Open-Sora v1.3: the STDiT3 denoiser and the v1.3 causal video VAE, written to load the released weights."""
