"""New unlabelled structures from seed structures: LAMMPS MD, strains, vacancies, rattling."""
