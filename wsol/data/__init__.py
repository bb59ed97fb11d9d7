"""Data layer: the WSOL metadata format, split-aware datasets and the synthetic benchmark."""
