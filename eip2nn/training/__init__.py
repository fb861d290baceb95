"""Training: samples with targets per head, the fit loop, metrics and stages."""
