"""Video data sources (HDF5 shards, video folders, synthetic), splits, transforms and the DataModule."""
