"""FDM's training-batch construction: group sampling, the mask distribution, gathering and padding."""

from __future__ import annotations

import pytest
import torch

from videxp.models.fdm.batching import (
    build_training_batch,
    build_window_batch,
    sample_masks,
    sample_some_indices,
)
from videxp.utils.seeding import torch_generator


def test_groups_are_valid_and_evenly_spaced():
    g = torch_generator(0)
    for _ in range(500):
        idx = sample_some_indices(20, 300, g)
        assert 1 <= len(idx) <= 20
        assert all(0 <= i < 300 for i in idx)
        assert idx == sorted(idx)


def test_mask_distribution_matches_fdm():
    """The reference simulation: K=20, T=300 gives ~2.1 observed + 12.7 latent frames, ~72% of rows with no
    observed frame; K=20, T=40 gives ~60% unconditional rows."""
    g = torch_generator(1)
    obs, latent = sample_masks(3000, 300, 20, g)
    assert abs(obs.sum(1).mean().item() - 2.1) < 0.3
    assert abs(latent.sum(1).mean().item() - 12.7) < 0.6
    assert abs((obs.sum(1) == 0).float().mean().item() - 0.72) < 0.04
    assert ((obs + latent) <= 1).all() and ((obs + latent).sum(1) <= 20).all()
    obs, latent = sample_masks(3000, 40, 20, g)
    assert abs((obs.sum(1) == 0).float().mean().item() - 0.60) < 0.04


def test_gathered_batch_layout():
    B, T, K = 3, 30, 8
    videos = torch.arange(B * T, dtype=torch.float32).view(B, T, 1, 1, 1).expand(B, T, 3, 2, 2).clone()
    tb = build_training_batch(videos, K, torch_generator(2))
    assert tb.frames.shape == (B, K, 3, 2, 2) and tb.frame_indices.shape == (B, K)
    for b in range(B):
        n = int(tb.num_chosen[b])
        assert (tb.obs_mask[b, :n] + tb.latent_mask[b, :n] == 1).all()
        chosen = tb.frame_indices[b, :n]
        assert torch.all(chosen[1:] > chosen[:-1]), "chosen frames come first, ascending"
        assert torch.equal(tb.frames[b, :n, 0, 0, 0], videos[b, chosen, 0, 0, 0])
        # padding comes from the next video of the batch, at the recorded indices
        pad = tb.frame_indices[b, n:]
        assert torch.equal(tb.frames[b, n:, 0, 0, 0], videos[(b + 1) % B, pad, 0, 0, 0])


def test_same_generator_seed_same_batch():
    videos = torch.randn(2, 20, 3, 4, 4)
    a = build_training_batch(videos, 6, torch_generator(5))
    b = build_training_batch(videos, 6, torch_generator(5))
    assert torch.equal(a.frames, b.frames) and torch.equal(a.obs_mask, b.obs_mask)


def test_window_batches_follow_the_autoreg_pattern():
    """training_masks=autoregressive: K consecutive frames of the row's own video, the first n observed."""
    videos = torch.arange(3 * 12, dtype=torch.float32).view(3, 12, 1, 1, 1).expand(3, 12, 3, 2, 2)
    tb = build_window_batch(videos, 5, (2, 4), torch_generator(0))
    assert tb.frames.shape == (3, 5, 3, 2, 2)
    for b in range(3):
        idx = tb.frame_indices[b]
        assert torch.equal(idx, idx[0] + torch.arange(5)) and 0 <= idx[0] <= 7
        assert torch.equal(tb.frames[b, :, 0, 0, 0], videos[b, idx, 0, 0, 0])  # no frames of other videos
        n = int(tb.obs_mask[b].sum())
        assert 2 <= n <= 4 and torch.equal(tb.obs_mask[b], (torch.arange(5) < n).float())
    assert torch.equal(tb.latent_mask, 1 - tb.obs_mask)
    with pytest.raises(ValueError, match="max_frames"):
        build_window_batch(videos, 5, (1, 5), torch_generator(0))


def test_videos_as_long_as_max_frames_finish_even_when_every_frame_is_chosen():
    """FDM's loop spins forever once every frame of a T == max_frames video is chosen; ours stops there."""
    obs, latent = sample_masks(400, 6, 6, torch_generator(3))
    chosen = (obs + latent).sum(1)
    assert (chosen <= 6).all() and (chosen == 6).any()


def test_videos_shorter_than_max_frames_are_refused_not_spun_on():
    with pytest.raises(ValueError, match=r"4 frames, fewer than max_frames=6.*dataset.video_length"):
        sample_masks(2, 4, 6, torch_generator(0))


def test_training_on_clips_shorter_than_max_frames_is_a_config_error_at_start(tmp_path):
    from conftest import TINY, compose_cfg

    from videxp import train
    from videxp.errors import ConfigError

    cfg = compose_cfg("train", [*TINY, "dataset.video_length=4", "trainer.max_steps=2"], tmp_path)
    with pytest.raises(ConfigError, match=r"dataset.video_length=4 .* model.max_frames=6"):
        train.run(cfg)
    assert not (tmp_path / "checkpoints").exists()
