"""Would today's EIP choice rule choose what a finished pipeline's stages chose?

Usage: python scripts/check_eip_choices.py si-full mo-full ...   (names under outputs/pipelines/)

For each finished stage that chose its EIPs (pretraining heads, weak-selector
candidates) under another rule (its folder's hash is not the one today's code
gives its config), it reads the EIPs from the stage's notes, chooses again on
the same split with :func:`eip2nn.labelling.choice.select_eips`, and prints
any difference. The labels come from the stage's label store, so nothing is
relabelled when they are there. Run with EIP2NN_DATA_DIR set, like the pipelines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from eip2nn.data.protocol import Split, make_split
from eip2nn.labelling.choice import select_eips
from eip2nn.potentials.db import PotentialsDB
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import RESULT_FILE, stage_dir

ROOT = Path(__file__).resolve().parent.parent


def recorded(notes: list[str], prefix: str) -> list[str]:
    """EIP ids from notes such as "chosen EIP <id>: aligned energy MAE ..."."""
    return [n[len(prefix):].split(":")[0].strip() for n in notes if n.startswith(prefix)]


def check(name: str, db: PotentialsDB) -> tuple[int, int]:
    """(unchanged, changed) choices among the pipeline's stages chosen under another rule."""
    unchanged = changed = 0
    for folder in sorted((ROOT / "outputs" / "pipelines" / name / "stages").glob("*-*")):
        if not (folder / RESULT_FILE).is_file():
            continue
        cfg = StageConfig.from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
        if not cfg.chooses_eips or stage_dir(cfg).name == folder.name:
            continue
        notes = json.loads((folder / RESULT_FILE).read_text())["notes"]
        checks = []
        if cfg.stage == "pretrain" and not cfg.data.eips:
            checks.append(("heads", recorded(notes, "chosen EIP "), cfg.data.n_eips))
        if cfg.uses_weak_labels and not cfg.weak.eips:
            checks.append(("weak candidates", recorded(notes, "selector candidate "), cfg.weak.n_eips))
        split = make_split(cfg.data)
        for what, before, n in checks:
            specs, _ = select_eips(db, [], n, Split.labelled(split.train), split.species, split.source_tag,
                                   cfg.data.labels, cfg.data.workers or None, compare_on=split.train)
            now = [s.id for s in specs]
            if now == before:
                unchanged += 1
            else:
                changed += 1
                print(f"{name} {folder.name} ({cfg.arm}, fraction {cfg.data.dft_fraction}, seed {cfg.train.seed}) "
                      f"{what}:\n  then {before}\n  now  {now}")
    return unchanged, changed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", help="pipeline names under outputs/pipelines/")
    args = p.parse_args()
    db = PotentialsDB()
    for name in args.names:
        unchanged, changed = check(name, db)
        print(f"{name}: {unchanged} choices made under another rule are unchanged today, {changed} changed")


if __name__ == "__main__":
    main()
