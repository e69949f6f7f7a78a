"""One-off figure of issue 4: partial Jacobian rank of ResNet-50 at 224 x 224, 768 columns, all 19 points.

Run: ``python -m benchmarks.resnet50_224 [--device auto] [--storage-dir /tmp/ranksuite-jac]``. Writes
``benchmarks/results/resnet50-224-<device class>.json`` with the wall time (CUDA-synchronised), the
peak memory, the ranks and the chunking used. On a CPU the 17.5 GB of float32 Jacobians go to
memory-mapped files (``--storage-dir``); on a GPU they stay on the device.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import timm
import torch

from suite.data.registry import Dataset
from suite.metrics.rank_diminishing.partial_jacobian import PartialJacobianParams, partial_jacobian_rank
from suite.metrics.registry import MetricContext
from suite.runner.environment import device_class, provenance, resolve_device
from suite.runner.measure import measure
from suite.runner.store import atomic_write_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--storage-dir", default="/tmp/ranksuite-jacobians")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False, zero_init_last=False).eval().to(device)
    image = torch.randn(1, 3, 224, 224)
    params = PartialJacobianParams(
        patch=[16, 16], n_inputs=1, keep_singular_values=False,
        jacobian_storage_dir=args.storage_dir if device.type == "cpu" else None,
    )
    with measure(device) as m:
        values = partial_jacobian_rank(model, Dataset(inputs=image), params, MetricContext(device=device, seed=0))
    result = {
        "what": "partial_jacobian_rank, timm resnet50 (random init, zero_init_last=False), 224x224, centre 16x16x3 patch",
        "points": len(values["layers"]),
        "K": values["K"],
        "seconds": m.time_s,
        "peak_bytes": m.peak_bytes,
        "memory_kind": m.memory_kind,
        "chunk_size": values["chunk_size"],
        "n_chunks": values["n_chunks"],
        "ranks": values["ranks_first"],
        "layers": values["layers"],
        "machine": provenance(device),
    }
    out = Path(args.output) / f"resnet50-224-{device_class(device)}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"{result['points']} points, K={result['K']}: {m.time_s:.1f} s, peak {m.peak_bytes / 2**30:.2f} GiB -> {out}")


if __name__ == "__main__":
    main()
