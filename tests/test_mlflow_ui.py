"""End to end against a real `mlflow server`: a tiny pipeline logs over HTTP, the REST API shows
what arrived, and headless Chromium renders the experiment in the MLflow UI (screenshot kept
under test-artifacts/)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.runner import run_pipeline

TINY = Path(__file__).parent / "data" / "tiny_pipeline.yaml"
ARTIFACTS = Path(os.environ.get("EIP2NN_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,900", "--virtual-time-budget=30000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                             "--artifacts-destination", str(tmp_path / "server-artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not answer /health within 120 s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def test_pipeline_against_a_real_mlflow_server_and_its_ui(tmp_path, mlflow_server, data_mirror_session,
                                                          monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = load_pipeline(TINY, [f"output={tmp_path / 'out'}", f"data.labels={tmp_path / 'labels.sqlite'}",
                               "study.arms=[baseline,transfer]", "name=ui-e2e"])
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed

    api = mlflow_server + "/api/2.0/mlflow"
    exp = get(f"{api}/experiments/get-by-name?experiment_name=eip2nn-ui-e2e")["experiment"]
    runs = post(f"{api}/runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 100})["runs"]
    tags = {r["info"]["run_id"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs}
    children = [r for r in runs if tags[r["info"]["run_id"]].get("mlflow.parentRunId") == result.run_id]
    cells = [r for r in children if tags[r["info"]["run_id"]]["eip2nn.stage"] != "pretrain"]
    assert len(children) == 6 and len(cells) == 4  # 2 pretrain + 2 arms x 2 seeds
    for r in cells:
        t = tags[r["info"]["run_id"]]
        assert {t["eip2nn.arm"], t["eip2nn.seed"], t["eip2nn.dft_fraction"], t["eip2nn.element"]} <= \
            {"baseline", "transfer", "0", "1", "0.5", "Si"}
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        cell = next(c for c in result.cells if c.run_id == r["info"]["run_id"])
        assert metrics["test_energy_mae_meV_atom"] == pytest.approx(cell.test_energy_mae)
        models = get(f"{api}/artifacts/list?run_id={r['info']['run_id']}&path=model")
        assert [f["path"] for f in models["files"]] == ["model/model.pt"]
    results = get(f"{api}/artifacts/list?run_id={result.run_id}&path=results")
    assert {"results/results.md", "results/results.csv"} <= {f["path"] for f in results["files"]}

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "headless Chromium is needed: `make test` installs it (Debian package chromium)"
    page = f"{mlflow_server}/#/experiments/{exp['experiment_id']}/runs"
    profile = tmp_path / "chromium-profile"
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
                         capture_output=True, text=True, timeout=180).stdout
    assert "eip2nn-ui-e2e" in dom  # the experiment is rendered ...
    parent_name = next(r["info"]["run_name"] for r in runs if r["info"]["run_id"] == result.run_id)
    assert parent_name in dom  # ... with the pipeline's parent run in its runs table
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_experiment.png"
    shot.unlink(missing_ok=True)
    subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}", page],
                   capture_output=True, timeout=180)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
