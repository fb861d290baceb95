"""Weak supervision: per-structure choice of the EIP closest to DFT, and pseudo-DFT labels."""
