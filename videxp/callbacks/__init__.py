"""Lightning callbacks shared by every trainable model."""
