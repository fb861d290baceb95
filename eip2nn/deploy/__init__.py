"""A trained model outside Python training: exported for LAMMPS, run as MD."""
