"""Per-video fine-tuning experiments (experiment=naive_finetune)."""
