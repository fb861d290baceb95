"""Neural-network potentials: graphs, backbones, multi-head energy models, freezing."""
