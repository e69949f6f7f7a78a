"""The runner: results.jsonl records and run metadata, determinism, cache policies, truncated lines, kill + resume."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from suite.cli import main
from suite.runner.execute import jsonable
from suite.runner.store import ResultCache, RunDir, iter_records
from suite.spec import expand_cases, load_spec

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: runnertest
reference: "runner tests"
tier: smoke
defaults: {device: cpu, seed: 3}
models:
  - {id: a, source: builtin, name: mlp, widths: [10, 8, 6], seed: 7}
  - {id: b, source: builtin, name: mlp, widths: [10, 8, 6]}
  - {id: c, source: builtin, name: mlp, widths: [10, 8, 6], seed: 8}
metrics:
  - id: spec
    kind: weight_spectrum
    checks:
      - {kind: theory, key: ranks, expected_key: full_ranks, relation: bound}
cases:
  matrix: {model: [a, b, c], metric: [spec]}
"""

IDS = ["a/none/spec", "b/none/spec", "c/none/spec"]


class Runner:
    def __init__(self, tmp_path: Path, text: str = SPEC):
        self.root = tmp_path
        self.spec = tmp_path / "runnertest.yaml"
        self.runs = tmp_path / "runs"
        self.write(text)

    def write(self, text: str) -> None:
        self.spec.write_text(text, encoding="utf-8")

    def __call__(self, run_id: str, *extra: str) -> int:
        return main(
            [
                "run", str(self.spec), "--run-id", run_id, "--no-progress", "--no-report",
                "--runs-dir", str(self.runs),
                "--baselines-dir", str(self.root / "baselines"),
                "--reports-dir", str(self.root / "reports"),
                *extra,
            ]
        )

    def results(self, run_id: str) -> Path:
        return self.runs / run_id / "results.jsonl"

    def lines(self, run_id: str) -> list[dict]:
        text = self.results(run_id).read_text(encoding="utf-8")
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    def by_case(self, run_id: str) -> dict[str, dict]:
        return {r["case_id"]: r for r in self.lines(run_id)}

    def meta(self, run_id: str) -> dict:
        return json.loads((self.runs / run_id / "meta.json").read_text(encoding="utf-8"))

    def hashes(self) -> dict[str, str]:
        return {c.id: c.hash for c in expand_cases(load_spec(self.spec).spec)}


@pytest.fixture
def runner(tmp_path) -> Runner:
    return Runner(tmp_path)


# -------------------------------------------------------------------------- records and metadata


def test_records_and_meta_are_complete(runner):
    assert runner("m1") == 0
    meta = runner.meta("m1")
    assert meta["run_id"] == "m1"
    assert meta["spec"] == "runnertest"
    assert meta["spec_path"] == str(runner.spec)
    assert meta["tier"] == "smoke"
    assert meta["seed"] == 3
    assert meta["cases"] == IDS
    assert meta["cache_policy"] == "only-missing"
    assert "sha" in meta["git"] and "dirty" in meta["git"]
    if meta["git"]["sha"] is not None:
        assert len(meta["git"]["sha"]) == 40
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["python"] == platform.python_version()
    assert meta["versions"]["timm"]
    assert meta["device"] == "cpu" and meta["device_class"] == "cpu"
    assert isinstance(meta["device_name"], str) and meta["device_name"]

    raw = runner.results("m1").read_text(encoding="utf-8").splitlines()
    assert len(raw) == 3
    hashes = runner.hashes()
    records = [json.loads(line) for line in raw]
    assert [r["case_id"] for r in records] == IDS
    assert [r["seed"] for r in records] == [7, 3, 8]
    for rec in records:
        assert rec["run_id"] == "m1"
        assert rec["status"] == "ok"
        assert rec["error"] is None
        assert rec["case_hash"] == hashes[rec["case_id"]]
        assert rec["cache_key"] == f"{rec['case_hash']}-cpu"
        assert rec["device"] == "cpu" and rec["device_class"] == "cpu"
        assert rec["reused_from"] is None
        assert isinstance(rec["time_s"], float) and 0 <= rec["time_s"] < 60
        assert isinstance(rec["build_s"], float) and rec["build_s"] >= 0
        assert rec["wall_s"] >= rec["time_s"]
        assert isinstance(rec["peak_mem_bytes"], int) and rec["peak_mem_bytes"] >= 0
        assert rec["memory_kind"] == "rss_delta"
        assert rec["values"]["ranks"] == [8, 6]
        assert rec["values"]["shapes"] == [[8, 10], [6, 8]]
    verdicts = json.loads((runner.runs / "m1" / "verdicts.json").read_text(encoding="utf-8"))
    assert [v["status"] for v in verdicts] == ["pass"] * 3


def test_same_spec_twice_gives_identical_values(runner):
    assert runner("d1", "--cache", "never") == 0
    assert runner("d2", "--cache", "never") == 0
    first, second = runner.by_case("d1"), runner.by_case("d2")
    for cid in IDS:
        assert second[cid]["reused_from"] is None
        assert first[cid]["values"] == second[cid]["values"]
    # the seed matters: a and c differ only in their seed
    assert first["a/none/spec"]["values"]["singular_values"] != first["c/none/spec"]["values"]["singular_values"]


def test_seed_override_changes_the_hash(runner):
    hashes = runner.hashes()
    assert len(set(hashes.values())) == 3
    runner.write(SPEC.replace("seed: 8}", "seed: 3}"))
    # c now equals b (same config, same effective seed): same hash, so results are shared
    again = runner.hashes()
    assert again["c/none/spec"] == again["b/none/spec"]


# ----------------------------------------------------------------------------------- cache policies


def test_cache_policies_for_successful_records(runner):
    assert runner("c1") == 0
    assert runner("c2") == 0  # default only-missing: reuse
    c1, c2 = runner.by_case("c1"), runner.by_case("c2")
    for cid in IDS:
        assert c2[cid]["reused_from"] == "c1"
        assert c2[cid]["run_id"] == "c2"
        assert c2[cid]["values"] == c1[cid]["values"]
        assert c2[cid]["finished"] == c1[cid]["finished"]  # copied, not recomputed
    assert runner("c3") == 0
    assert {r["reused_from"] for r in runner.lines("c3")} == {"c1"}  # the origin, not the copy
    assert runner("c4", "--cache", "never") == 0
    assert {r["reused_from"] for r in runner.lines("c4")} == {None}
    assert runner("c5", "--cache", "always") == 0
    assert all(r["reused_from"] in {"c1", "c4"} for r in runner.lines("c5"))

    # resuming the same run id: nothing to do, nothing appended
    assert runner("c1") == 0
    assert len(runner.lines("c1")) == 3
    # ... unless told to recompute
    assert runner("c1", "--cache", "never") == 0
    assert len(runner.lines("c1")) == 6
    assert [r["reused_from"] for r in runner.lines("c1")[3:]] == [None] * 3

    # a changed case is not served from the cache
    runner.write(SPEC.replace("widths: [10, 8, 6], seed: 7", "widths: [10, 8, 5], seed: 7"))
    assert runner("c6") == 0
    c6 = runner.by_case("c6")
    assert c6["a/none/spec"]["reused_from"] is None
    assert c6["a/none/spec"]["values"]["ranks"] == [8, 5]
    assert c6["b/none/spec"]["reused_from"] == "c1"


BROKEN = SPEC.replace(
    "metrics:\n", "metrics:\n  - {id: broken, kind: weight_spectrum, params: {layers: ['nomatch*']}}\n"
).replace("model: [a, b, c], metric: [spec]", "model: [a], metric: [broken, spec]")


def test_cache_policies_for_error_records(tmp_path):
    runner = Runner(tmp_path, BROKEN)
    assert runner("e1") == 2
    e1 = runner.by_case("e1")
    assert e1["a/none/broken"]["status"] == "error"
    assert e1["a/none/spec"]["status"] == "ok"

    assert runner("e2") == 2  # only-missing: the error is recomputed, the success reused
    e2 = runner.by_case("e2")
    assert e2["a/none/broken"]["reused_from"] is None
    assert e2["a/none/broken"]["status"] == "error"
    assert e2["a/none/spec"]["reused_from"] == "e1"

    assert runner("e3", "--cache", "always") == 2  # always: the error is reused too
    e3 = runner.by_case("e3")
    assert e3["a/none/broken"]["status"] == "error"
    assert e3["a/none/broken"]["reused_from"] in {"e1", "e2"}
    assert e3["a/none/broken"]["error"]["type"] == "MetricError"

    # resuming e1 under only-missing retries its failed case but keeps its success
    assert runner("e1") == 2
    lines = runner.lines("e1")
    assert [r["case_id"] for r in lines] == ["a/none/broken", "a/none/spec", "a/none/broken"]
    # ... and under always keeps both
    assert runner("e1", "--cache", "always") == 2
    assert len(runner.lines("e1")) == 3


# ---------------------------------------------------------------------------- truncated last line


def test_truncated_last_line_is_skipped_and_next_append_starts_a_new_line(tmp_path):
    run = RunDir(tmp_path / "run")
    run.append({"case_id": "x", "status": "ok", "values": {"v": 1}})
    run.append({"case_id": "y", "status": "ok", "values": {"v": 2}})
    with open(run.results_path, "ab") as fh:
        fh.write(b'{"case_id": "z", "status": "o')  # a writer killed mid-line
    with pytest.warns(UserWarning, match=r"results.jsonl:3: skipping an incomplete record"):
        assert [r["case_id"] for r in run.records()] == ["x", "y"]
    run.append({"case_id": "z", "status": "ok", "values": {"v": 3}})
    lines = run.results_path.read_bytes().split(b"\n")
    assert lines[2] == b'{"case_id": "z", "status": "o'
    assert json.loads(lines[3]) == {"case_id": "z", "status": "ok", "values": {"v": 3}}
    assert lines[4] == b""
    with pytest.warns(UserWarning, match="incomplete record"):
        latest = run.latest()
    assert sorted(latest) == ["x", "y", "z"]
    assert latest["z"]["values"] == {"v": 3}
    # a clean file reads without any warning
    clean = RunDir(tmp_path / "clean")
    clean.append({"case_id": "x", "status": "ok"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(clean.records()) == 1
    assert list(iter_records(tmp_path / "absent.jsonl")) == []


def test_resume_after_truncated_line_recomputes_that_case(runner):
    assert runner("t1") == 0
    path = runner.results("t1")
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last_start + 40])  # the third record loses its end
    with pytest.warns(UserWarning, match="incomplete record"):
        assert runner("t1") == 0
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    raw = text.splitlines()
    assert len(raw) == 4
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw[2])
    recs = [json.loads(line) for i, line in enumerate(raw) if i != 2]
    assert [r["case_id"] for r in recs] == IDS
    # the truncated case is recomputed (its earlier copy is unreadable), the others kept
    assert recs[2]["reused_from"] is None
    assert recs[2]["values"]["ranks"] == [8, 6]
    assert "resumed" in runner.meta("t1")


def test_result_cache_skips_unfinished_statuses(tmp_path):
    run = RunDir(tmp_path / "runs" / "r")
    run.append({"case_id": "a", "cache_key": "k1", "status": "ok"})
    run.append({"case_id": "b", "cache_key": "k2", "status": "error"})
    run.append({"case_id": "c", "cache_key": "k3", "status": "running"})
    cache = ResultCache(tmp_path / "runs")
    assert cache.get("k1", "only-missing")["_run"] == "r"
    assert cache.get("k1", "never") is None
    assert cache.get("k2", "only-missing") is None
    assert cache.get("k2", "always")["status"] == "error"
    assert cache.get("k3", "always") is None


def test_jsonable_converts_tensors_and_non_finite_floats():
    value = {"t": torch.tensor([1.0, float("inf")]), 1: (float("nan"), -float("inf")), "n": torch.tensor(3)}
    assert jsonable(value) == {"t": [1.0, "inf"], "1": ["nan", "-inf"], "n": 3}
    json.dumps(jsonable(value), allow_nan=False)


# ---------------------------------------------------------------------------------- kill and resume

KILL_SPEC = """\
name: killtest
reference: "kill and resume"
tier: smoke
defaults: {device: cpu, seed: 0}
models:
  - {id: m1, source: builtin, name: mlp, widths: [1100, 1100, 1100, 1100], seed: 1}
  - {id: m2, source: builtin, name: mlp, widths: [1100, 1100, 1100, 1100], seed: 2}
  - {id: m3, source: builtin, name: mlp, widths: [1100, 1100, 1100, 1100], seed: 3}
  - {id: m4, source: builtin, name: mlp, widths: [1100, 1100, 1100, 1100], seed: 4}
metrics:
  - {id: spec, kind: weight_spectrum, params: {keep_singular_values: false}}
cases:
  matrix: {model: [m1, m2, m3, m4], metric: [spec]}
"""


def _complete_lines(path: Path) -> list[bytes]:
    if not path.is_file():
        return []
    return [line for line in path.read_bytes().split(b"\n")[:-1] if line.strip()]


def test_kill_and_resume(tmp_path):
    spec = tmp_path / "killtest.yaml"
    spec.write_text(KILL_SPEC, encoding="utf-8")
    runs = tmp_path / "runs"
    results = runs / "R" / "results.jsonl"
    cmd = [
        sys.executable, "-m", "suite", "run", str(spec), "--run-id", "R", "--runs-dir", str(runs),
        "--no-report", "--no-progress", "--baselines-dir", str(tmp_path / "baselines"),
    ]
    # one BLAS thread: several threads on a busy 2-core machine make SVD times erratic
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    with open(tmp_path / "first.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while not _complete_lines(results):
                assert proc.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "no case finished within 60 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    text = results.read_bytes()
    before = [json.loads(line) for line in text.split(b"\n") if line.strip()]  # every line parses
    assert text.endswith(b"\n")
    done = {r["case_id"]: r for r in before}
    assert 1 <= len(done) < 4, "the kill must interrupt the run"
    assert all(r["status"] == "ok" for r in before)

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    ids = [r["case_id"] for r in records]
    assert sorted(ids) == ["m1/none/spec", "m2/none/spec", "m3/none/spec", "m4/none/spec"]  # none twice
    assert all(r["status"] == "ok" for r in records)
    assert all(r["values"]["full_ranks"] == [1100, 1100, 1100] for r in records)
    for cid, rec in done.items():
        assert next(r for r in records if r["case_id"] == cid) == rec  # kept from the first attempt
        assert f"cached {cid}" in resumed.stderr
    for rec in records:
        if rec["case_id"] not in done:
            assert rec["reused_from"] is None
            assert f"ok     {rec['case_id']}" in resumed.stderr
    meta = json.loads((runs / "R" / "meta.json").read_text(encoding="utf-8"))
    assert "resumed" in meta
    assert meta["cases"] == sorted(ids)
