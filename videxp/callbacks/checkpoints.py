"""last.ckpt replaced atomically, the previous one kept as last.prev.ckpt; checkpoints name their class."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

MODULE_KEY = "videxp_module"  # checkpoint entry: the LightningModule class it was saved from
PREVIOUS = "last.prev.ckpt"  # the last.ckpt before the current one: what a resume falls back to
PARTIAL = ".last.partial.ckpt"  # a last.ckpt being written (renamed onto last.ckpt once complete)


def module_name(module: Any) -> str:
    """`package.module.Class` of `module`, as a checkpoint records it."""
    return f"{type(module).__module__}.{type(module).__qualname__}"


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint whose last.ckpt is never left half written: the new one is written as
    .last.partial.ckpt, the old last.ckpt becomes last.prev.ckpt, then the new one is renamed into place
    (both renames atomic). A kill mid-write leaves the previous last.ckpt intact. Every checkpoint the
    trainer saves also records the module class (`videxp_module`), so loading it into another model
    family names both. Sharded FSDP checkpoints (folders) are written as Lightning writes them. A second
    save at the same step (two callbacks, or the one at the end of training) rewrites last.ckpt without
    turning it into last.prev.ckpt, so that one stays an older step.
    """

    # per trainer: {last.ckpt path: global step it was last written at}, shared by every instance
    _written: ClassVar[weakref.WeakKeyDictionary] = weakref.WeakKeyDictionary()

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[MODULE_KEY] = module_name(pl_module)
        super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        path = Path(filepath)
        sharded = getattr(trainer.strategy, "_state_dict_type", "full") == "sharded"
        if path.name != f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}" or sharded:
            super()._save_checkpoint(trainer, filepath)
            return
        partial = path.with_name(PARTIAL)
        super()._save_checkpoint(trainer, str(partial))  # every rank takes part; rank 0 writes
        written = self._written.setdefault(trainer, {})
        if trainer.is_global_zero and partial.is_file():
            if path.is_file() and written.get(str(path)) != trainer.global_step:
                os.replace(path, path.with_name(PREVIOUS))
            os.replace(partial, path)
        written[str(path)] = trainer.global_step
        trainer.strategy.barrier("LastCheckpoint")
        self._last_checkpoint_saved = filepath
