"""FramePack (HunyuanVideo packed transformer) image-to-video generation through diffusers."""
