"""edgekd: distil a big image classifier into a small, fast one and ship it to edge GPUs."""

__version__ = "0.1.0"
