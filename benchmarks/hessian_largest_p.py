"""Issue 6 figure: the largest parameter count whose three Hessian ranks one metric call finishes in a budget.

Run: ``python -m benchmarks.hessian_largest_p [--budget 60] [--device auto]``. For each method, nets of
growing width are measured through the metric functions themselves (``hessian_rank``: dense float64
``H_L``, ``H_o``, ``H_f`` and three ``eigvalsh``; ``hessian_rank_hvp``: Hessian-vector products and the
randomised range finder) until one call exceeds the budget; every measured rank triple is compared with
the closed form of Singh et al. (2021) (:func:`suite.theory.hessian.linear_fcn_ranks`) at the measured data
rank. Families: bias-free linear MLPs ``[64, w, w, 10]`` on 100 scikit-learn digits with cross-entropy
(the released code's setting; the ranks grow like ``36 w``) and, for the HVP path, ``[16, w, w, 2]`` on 50
Gaussian inputs with MSE (ranks ``8 w + 24``, small against ``p``). Writes
``benchmarks/results/hessian-largest-p-<device class>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from suite.data.digits import DigitsParams, digits
from suite.data.synthetic import GaussianParams, gaussian
from suite.metrics.hessian.hvp_rank import HessianRankHVPParams, hessian_rank_hvp
from suite.metrics.hessian.rank import HessianRankParams, hessian_rank
from suite.metrics.registry import MetricContext
from suite.models.builtin import MLPParams, mlp
from suite.models.registry import BuildContext
from suite.runner.environment import device_class, provenance, resolve_device
from suite.runner.measure import measure
from suite.runner.store import atomic_write_text
from suite.theory.hessian import linear_fcn_ranks

FAMILIES = {
    # name: (input dim, outputs, loss, dataset, widths tried per method)
    "digits_ce": (64, 10, "cross_entropy", "digits", {"dense": [32, 48, 56, 64, 72], "hvp": [64, 96, 104, 112, 128]}),
    "gauss_k2_mse": (16, 2, "mse", "gaussian", {"hvp": [128, 192, 224, 256]}),
}


def _data(kind: str, d: int) -> Any:
    if kind == "digits":
        return digits(DigitsParams(n=100), 0)
    return gaussian(GaussianParams(shape=[d], n=50), 0)


def _measure_one(method: str, widths: list[int], loss: str, data: Any, device: torch.device) -> dict[str, Any]:
    model = mlp(MLPParams(widths=widths, activation="identity", bias=False), BuildContext(seed=0)).to(device)
    ctx = MetricContext(device=device, seed=0)
    with measure(device) as m:
        if method == "dense":
            values = hessian_rank(model, data, HessianRankParams(loss=loss, max_params=10**6), ctx)
        else:
            values = hessian_rank_hvp(model, data, HessianRankHVPParams(loss=loss), ctx)
    pred = linear_fcn_ranks(int(values["data_rank"]), widths, loss)
    predicted = [pred.outer, pred.functional, pred.loss]
    return {
        "widths": widths, "p": values["n_params"], "seconds": round(m.time_s, 2), "peak_bytes": m.peak_bytes,
        "ranks": values["ranks"], "predicted": predicted, "equal": values["ranks"] == predicted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per metric call")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    device = resolve_device(args.device)
    runs: list[dict[str, Any]] = []
    largest: dict[str, Any] = {}
    for family, (d, k, loss, data_kind, methods) in FAMILIES.items():
        data = _data(data_kind, d)
        for method, ws in methods.items():
            for w in ws:
                row = {"family": family, "method": method, **_measure_one(method, [d, w, w, k], loss, data, device)}
                runs.append(row)
                print(f"{family:13s} {method:5s} w={w:4d} p={row['p']:6d} {row['seconds']:7.1f} s ranks {row['ranks']} "
                      f"{'= closed form' if row['equal'] else '!= closed form ' + str(row['predicted'])}", flush=True)
                if row["seconds"] > args.budget:
                    break
                largest[f"{family}/{method}"] = row["p"]
    result = {"budget_s": args.budget, "largest_p_within_budget": largest, "runs": runs, "machine": provenance(device)}
    out = Path(args.output) / f"hessian-largest-p-{device_class(device)}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"largest p within {args.budget:g} s: {largest} -> {out}")


if __name__ == "__main__":
    main()
