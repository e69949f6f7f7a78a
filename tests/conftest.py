"""Shared fixtures for the ranksuite tests.

``BASE_SPEC`` is a small valid spec that only uses cheap built-in models (no timm: creating a timm
model takes seconds) and the data-free ``weight_spectrum`` metric. It expands to three cases::

    mlp/none/spectrum  planted/none/spectrum  planted/none/planted_rank

``planted`` has widths [12, 12, 10] and inner dims [3, 20], so its planted ranks are [3, 10]. The spec
declares a small Gaussian dataset ``noise`` that no case uses (for tests that add data cases).

``write_spec(text, name="spec.yaml")`` dedents ``text``, drops one leading newline (so the first line
of a triple-quoted string is line 1 of the file), writes it under the test's ``tmp_path`` (creating
sub-folders) and returns the path. Tests that assert line numbers should count from that first line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

__all__ = ["BASE_SPEC", "BASE_CASE_IDS", "dedent_spec"]

BASE_SPEC = """\
name: base
reference: "ranksuite test fixture: cheap built-in models only"
tier: smoke
defaults: {device: cpu, seed: 0, dtype: float32}
models:
  - {id: mlp, source: builtin, name: mlp, widths: [8, 6, 4]}
  - {id: planted, source: builtin, name: planted, widths: [12, 12, 10], ranks: [3, 20]}
datasets:
  - {id: noise, kind: gaussian, shape: [8], n: 16}
metrics:
  - id: spectrum
    kind: weight_spectrum
    checks:
      - {kind: baseline, key: ranks}
  - id: planted_rank
    kind: weight_spectrum
    params: {tolerance: {rule: feng}}
    checks:
      - {kind: theory, key: ranks, theory: planted_product_rank, relation: equal}
cases:
  matrix: {model: [mlp, planted], dataset: [none], metric: [spectrum]}
  explicit:
    - {model: planted, metric: planted_rank}
"""

BASE_CASE_IDS = ["mlp/none/spectrum", "planted/none/spectrum", "planted/none/planted_rank"]


def dedent_spec(text: str) -> str:
    """``textwrap.dedent`` without the one leading newline of a triple-quoted literal."""
    text = textwrap.dedent(text)
    return text[1:] if text.startswith("\n") else text


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """``write_spec(text, name="spec.yaml") -> Path``: write dedented YAML under ``tmp_path``."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent_spec(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def base_spec_path(write_spec: Callable[..., Path]) -> Path:
    """``BASE_SPEC`` written to ``tmp_path / "spec.yaml"``."""
    return write_spec(BASE_SPEC)


@contextmanager
def _single_thread() -> Iterator[None]:
    """One torch and one BLAS thread: on a busy 2-core machine, OpenMP spin-waits make small matrix work
    10-50x slower, and these tests only use small matrices."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            yield
        else:
            with threadpool_limits(limits=1):
                yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Single-threaded for one test."""
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """Single-threaded for a whole module: ``pytestmark = pytest.mark.usefixtures("one_thread_module")``."""
    with _single_thread():
        yield
