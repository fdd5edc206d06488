"""experiment=i2v_benchmark: image-to-video FVD benchmark (workflow W1): inputs, generation, summary."""
