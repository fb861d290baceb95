"""eip2nn: inject empirical interatomic potentials' knowledge into neural networks."""

__version__ = "0.1.0"
