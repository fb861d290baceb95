"""Whole studies from one YAML file: labels → selector → arms × DFT fractions × seeds → report."""
