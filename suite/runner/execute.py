"""Run the cases of a spec: build, measure, record, resume.

For every case: seeds are set (python, NumPy, torch), the model is built (and, with a ``train:`` block,
trained or loaded from the training cache, see :mod:`suite.training`) and the data loaded (timed), the metric
runs (timed, CUDA-synchronised, peak memory recorded) and one record is appended to
``runs/<run-id>/results.jsonl``. A case whose cache key (case hash + device class) was already computed
in an earlier run is reused under the ``cache`` policy, so rerunning an interrupted spec resumes it.
A case that raises is recorded as ``error`` with its traceback and the run goes on; a missing local
resource in the ``paper`` tier is recorded as ``skipped`` with the reason.
"""

from __future__ import annotations

import gc
import math
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from suite.data import load_dataset
from suite.errors import MissingResource
from suite.metrics import METRICS, MetricContext
from suite.models import BuildContext, build_model
from suite.runner.environment import device_class, provenance, resolve_device, seed_everything
from suite.runner.measure import measure
from suite.runner.progress import Progress
from suite.runner.store import ResultCache, RunDir, new_run_id
from suite.spec.expand import Case

__all__ = ["RunOptions", "execute", "jsonable"]

CACHE_POLICIES = ("always", "never", "only-missing")


@dataclass(frozen=True)
class RunOptions:
    """How to run: ``device`` overrides the spec default; ``cache`` is ``always|never|only-missing``."""

    runs_dir: Path = Path("runs")
    device: str | None = None
    cache: str = "only-missing"
    run_id: str | None = None
    progress: bool | None = None
    argv: list[str] = field(default_factory=list)


def jsonable(value: Any) -> Any:
    """Convert metric output to strict JSON: tensors/arrays to lists, NaN/inf to the strings 'nan'/'inf'."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _stderr_log(prefix: str) -> Callable[[str], None]:
    """A progress logger writing ``prefix: line`` to stderr (clearing a redrawn progress bar first)."""

    def log(line: str) -> None:
        clear = "\r\x1b[2K" if sys.stderr.isatty() else ""
        sys.stderr.write(f"{clear}  {prefix}: {line}\n")
        sys.stderr.flush()

    return log


def _build_trained(case: Case, device: torch.device, log: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The case's model trained as its ``train:`` block says (or loaded from the training cache).

    Returns:
        ``(model, training)``: the model on ``device`` and the ``training`` field of the result record.
    """
    from suite.training import cache_paths, train_or_load, training_definition, training_key

    if case.train_dataset is None:
        raise ValueError(f"model {case.model.id!r} trains on {case.model.train.dataset!r}, which the case lacks")
    ctx = BuildContext(seed=case.seed, dtype=case.dtype)
    model, record, hit = train_or_load(
        case.model,
        lambda: build_model(case.model, ctx).to(device),
        case.train_dataset,
        lambda: load_dataset(case.train_dataset, case.seed),
        seed=case.seed,
        dtype=case.dtype,
        device=device,
        log=_stderr_log(f"train {case.model.id} on {case.train_dataset.id}") if log else None,
    )
    key = training_key(training_definition(case.model, case.train_dataset, seed=case.seed, dtype=case.dtype))
    training = {**record.to_json(), "dataset": case.train_dataset.id, "key": key}
    training.update(cache_hit=hit, cache_path=str(cache_paths(key)[0]))
    return model, training


def _run_case(case: Case, device: torch.device, tier: str, log_training: bool = False) -> dict[str, Any]:
    """Compute one case; never raises for failures of the case itself.

    A model with a ``train:`` block is trained (or loaded from the training cache) as part of building it:
    the training time counts in ``build_s`` and the record gains a ``training`` field.
    """
    metric_def = METRICS.get(case.metric.kind)
    rec: dict[str, Any] = {"status": "ok", "values": None, "error": None, "skip_reason": None}
    model = data = None
    t0 = time.perf_counter()
    try:
        seed_everything(case.seed)
        with measure(device) as built:
            if getattr(case.model, "train", None) is not None:
                model, rec["training"] = _build_trained(case, device, log_training)
            else:
                model = build_model(case.model, BuildContext(seed=case.seed, dtype=case.dtype)).to(device)
            data = load_dataset(case.dataset, case.seed) if case.dataset is not None else None
        seed_everything(case.seed)
        with measure(device) as m:
            values = metric_def.fn(model, data, case.metric.params, MetricContext(device=device, seed=case.seed))
        rec.update(values=jsonable(values), time_s=m.time_s, peak_mem_bytes=m.peak_bytes, memory_kind=m.memory_kind)
        rec["build_s"] = built.time_s
    except MissingResource as exc:
        if tier == "paper":
            rec.update(status="skipped", skip_reason=str(exc))
        else:
            rec.update(status="error", error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()})
    except Exception as exc:  # a crashing case is recorded and the run continues
        rec.update(status="error", error={"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()})
    finally:
        del model, data
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def execute(spec: Any, spec_path: Path, cases: list[Case], options: RunOptions) -> RunDir:
    """Run ``cases`` of ``spec`` and return the run directory holding ``results.jsonl``.

    With ``options.run_id`` naming an existing run, records are appended to it (resuming it).
    """
    device = resolve_device(options.device or spec.defaults.device)
    dclass = device_class(device)
    run_id = options.run_id or new_run_id(spec.name)
    run = RunDir(options.runs_dir / run_id)
    cache = ResultCache(options.runs_dir)
    meta = {
        "run_id": run_id,
        "spec": spec.name,
        "spec_path": str(spec_path),
        "tier": spec.tier,
        "seed": spec.defaults.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cache_policy": options.cache,
        "argv": options.argv,
        "cases": [c.id for c in cases],
        **provenance(device),
    }
    if run.meta_path.is_file():
        old = run.meta()
        meta = {**old, "resumed": meta["started"], "cases": sorted(set(old.get("cases", [])) | set(meta["cases"]))}
    run.write_meta(meta)
    done_here = run.latest()
    progress = Progress(len(cases), enabled=options.progress)
    for case in cases:
        key = f"{case.hash}-{dclass}"
        progress.start(case.id)
        own = done_here.get(case.id)
        if own is not None and own.get("cache_key") == key and options.cache != "never" and (
            own.get("status") == "ok" or options.cache == "always"
        ):
            progress.done(case.id, "cached", 0.0)
            continue
        cached = cache.get(key, options.cache)
        if cached is not None:
            rec = {k: v for k, v in cached.items() if not k.startswith("_")}
            rec.update(run_id=run_id, case_id=case.id, reused_from=cached.get("reused_from") or cached["_run"])
            run.append(rec)
            progress.done(case.id, "cached", 0.0)
            continue
        outcome = _run_case(case, device, spec.tier, log_training=options.progress is not False)
        rec = {
            "run_id": run_id,
            "case_id": case.id,
            "case_hash": case.hash,
            "cache_key": key,
            "device": str(device),
            "device_class": dclass,
            "seed": case.seed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "reused_from": None,
            **outcome,
        }
        run.append(rec)
        progress.done(case.id, rec["status"], rec["wall_s"])
    progress.close()
    return run
