"""The one run lifecycle: a tracked run ends with the status that says how its block ended (real MLflow store)."""

import pytest

from eip2nn.tracking import NullRun, NullTracker, Tracker, make_tracker


class Pruned(Exception):
    pass


@pytest.fixture
def tracker(tmp_path):
    return Tracker("lifecycle", uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def status(tracker, run_id):
    return tracker.client.get_run(run_id).info.status


def test_a_block_that_ends_normally_finishes_its_run(tracker):
    with tracker.run("ok", {"k": "v"}) as run:
        run.log_metrics({"x": 1.0})
    assert status(tracker, run.run_id) == "FINISHED"
    assert tracker.client.get_run(run.run_id).data.tags["k"] == "v"


def test_a_block_may_end_its_run_failed_without_raising(tracker):
    with tracker.run("some cells failed", {}) as run:
        run.status = "FAILED"
    assert status(tracker, run.run_id) == "FAILED"


def test_an_error_fails_the_run_and_is_raised(tracker):
    with pytest.raises(ZeroDivisionError):
        with tracker.run("error", {}) as run:
            1 / 0
    assert status(tracker, run.run_id) == "FAILED"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, Pruned])
def test_an_interrupt_or_a_named_stop_kills_the_run_and_is_raised(tracker, exc):
    with pytest.raises(exc):
        with tracker.run("stopped", {}, killed_by=(Pruned,)) as run:
            raise exc()
    assert status(tracker, run.run_id) == "KILLED"


def test_a_child_run_names_its_parent(tracker):
    with tracker.run("parent", {}) as parent:
        with tracker.run("child", {}, parent.run_id) as child:
            pass
    assert tracker.client.get_run(child.run_id).data.tags["mlflow.parentRunId"] == parent.run_id


def test_without_tracking_runs_record_nothing_and_errors_still_raise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = make_tracker("off", enabled=False)
    assert isinstance(tracker, NullTracker) and not tracker.enabled
    with tracker.run("nothing", {"k": "v"}) as run:
        assert isinstance(run, NullRun) and run.run_id is None
        run.log_params({"a": 1})
        run.log_metrics({"x": 1.0})
        run.set_tags({"t": 1})
    with pytest.raises(ValueError):
        with tracker.run("nothing", {}):
            raise ValueError("still raised")
    assert not (tmp_path / "mlruns").exists()  # no store was made


def test_names_mlflow_refuses_are_logged_with_underscores(tracker):
    """A pipeline variant may be called snap+nn; its params and metrics still reach the store."""
    with tracker.run("variant", {}) as run:
        run.log_params({"variants": {"snap+nn": {"arm": "baseline"}}, "plain": 1})
        run.log_metrics({"test/snap+nn energy": 1.5})
    data = tracker.client.get_run(run.run_id).data
    assert data.params == {"variants.snap_nn.arm": "baseline", "plain": "1"}
    assert data.metrics == {"test/snap_nn energy": 1.5}
