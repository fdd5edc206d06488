"""LARP (hywang66/LARP): the video tokenizer with holistic latent queries and its autoregressive model."""
