"""RIVER / PFI latent flow matching: VQ autoencoders, flow transformer, interpolants, samplers."""
