"""The console command: tables for people, clear errors, exit codes."""

import subprocess
import sys

from eip2nn.cli import main


def test_potentials_list_filters_by_species(capsys):
    assert main(["potentials", "list", "--species", "Ge"]) == 0
    out = capsys.readouterr().out
    assert "lmp_Ge_tersoff" in out and "Tersoff_LAMMPS_Tersoff_1988T2_Si" not in out
    assert "potential(s)" in out


def test_potentials_list_can_exclude_leaking_models(capsys):
    main(["potentials", "list", "--species", "Si", "--exclude-fitted-to", "mlearn"])
    out = capsys.readouterr().out
    assert "snap" not in out.lower() and "lmp_Si_sw" in out


def test_potentials_check_reports_lattice_constant(capsys):
    assert main(["potentials", "check", "lmp_Si_sw"]) == 0
    out = capsys.readouterr().out
    assert "5.43" in out and "ok" in out


def test_potentials_check_flags_a_known_bad_model(capsys):
    assert main(["potentials", "check", "MEAM_LAMMPS_KimSeolJi_2017_PtCu"]) == 1
    assert "no energy minimum within" in capsys.readouterr().out


def test_unknown_eip_is_a_clear_error(tmp_path, capsys):
    xyz = tmp_path / "a.extxyz"
    from ase.build import bulk
    bulk("Si", "diamond", a=5.431).write(xyz)
    code = main(["label", "--file", str(xyz), "--eip", "nonexistent", "--labels", str(tmp_path / "s.sqlite")])
    assert code == 2
    assert "no EIP with id 'nonexistent'" in capsys.readouterr().err


def test_unreadable_file_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.extxyz"
    bad.write_text("3\nnot a comment line that extxyz accepts\nSi 0 0\n")
    code = main(["label", "--file", str(bad), "--eip", "lmp_Si_sw", "--labels", str(tmp_path / "s.sqlite")])
    assert code == 2
    assert "broken.extxyz" in capsys.readouterr().err


def test_label_summary_failures_export(tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write
    a = bulk("Si", "diamond", a=5.431, cubic=True)
    b = a.copy()
    b[0].symbol = "C"
    xyz = tmp_path / "in.extxyz"
    write(xyz, [a, b])
    store = str(tmp_path / "s.sqlite")
    assert main(["label", "--file", str(xyz), "--eip", "lmp_Si_sw", "--labels", store,
                 "--workers", "1", "--no-progress"]) == 0
    assert main(["labels", "summary", "--labels", store]) == 0
    assert main(["labels", "failures", "--labels", store]) == 0
    out = capsys.readouterr().out
    assert "failed:unsupported_species" in out and "structure contains ['C']" in out
    assert main(["labels", "export", "--file", str(xyz), "--labels", store, "-o", str(tmp_path / "o.extxyz")]) == 0


def test_console_entry_point_is_installed():
    done = subprocess.run([sys.executable, "-m", "eip2nn", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "label" in done.stdout


def test_check_reports_an_evaluation_error_as_a_failed_row(tmp_path, capsys):
    import yaml
    entry = {"id": "lmp_bad", "species": ["Si"], "family": "SW", "cutoff": 3.77, "citation": "c",
             "backend": {"type": "lammps", "pair_style": "sw/nonexistent",
                         "pair_coeff": "* * {file:Si.sw} {elements}", "files": ["Si.sw"]}}
    (tmp_path / "lmp_bad.yaml").write_text(yaml.safe_dump(entry))
    assert main(["potentials", "check", "lmp_bad", "--db", str(tmp_path)]) == 1
    assert "sw/nonexistent" in capsys.readouterr().out


def test_old_names_still_work_and_say_the_new_ones(monkeypatch, capsys):
    """`eip2nn run` is now `eip2nn score-eips`, and `--store` is now `--labels`: both old spellings still run."""
    import eip2nn.cli as cli
    seen = []
    monkeypatch.setattr(cli, "cmd_score_eips", lambda args: seen.append(args.labels) or 0)
    assert main(["run", "--element", "Si", "--store", "old.sqlite"]) == 0
    assert seen == ["old.sqlite"]
    err = capsys.readouterr().err
    assert "use `eip2nn score-eips`" in err and "--store is deprecated; use --labels" in err
    assert cli.build_parser().parse_args(["labels", "summary"]).labels == cli.DEFAULT_LABELS
