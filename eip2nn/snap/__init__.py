"""SNAP reference fit: LAMMPS ``compute snap`` bispectrum rows and a weighted ridge fit (the FitSNAP approach).

:mod:`.config` (cheap to import) holds the hyperparameters; :mod:`.bispectrum` the
design rows from LAMMPS; :mod:`.model` the fitted potential (predictions, JSON,
LAMMPS ``pair_style snap`` files, an ASE calculator); :mod:`.fit` the fit itself.
"""
