"""Wan2.1 image-to-video (diffusers) behind the one generator request."""
