"""The ``ranksuite`` command.

Exit codes (CI tells them apart): 0 all checks pass; 1 a check failed; 2 a case crashed; 3 invalid spec
or usage; 4 baseline missing or stale; 5 nothing selected. With several specs, the most serious wins
(3 > 2 > 1 > 4 > 5 > 0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from suite.errors import RanksuiteError, SpecError

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_CRASH, EXIT_USAGE, EXIT_BASELINE, EXIT_EMPTY = 0, 1, 2, 3, 4, 5
_SEVERITY = [EXIT_OK, EXIT_EMPTY, EXIT_BASELINE, EXIT_FAIL, EXIT_CRASH, EXIT_USAGE]


def worst(codes: list[int]) -> int:
    """The most serious of several exit codes (order above)."""
    return max(codes, key=_SEVERITY.index) if codes else EXIT_OK


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on usage errors; ranksuite reserves 2 for crashed cases and uses 3."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _spec_files(paths: list[str]) -> list[Path]:
    """Spec files named directly or found (``*.yaml``, sorted) in the folders named."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(path.glob("*.yaml")))
        else:
            files.append(path)
    return files


def _load_specs(paths: list[str], tiers: list[str] | None) -> list[Any]:
    """Load and validate every spec (raising on the first invalid one), keeping those of ``tiers``."""
    loaded = [_load(f) for f in _spec_files(paths)]
    return [s for s in loaded if not tiers or s.spec.tier in tiers]


def _load(path: Path):
    from suite.spec import load_spec

    return load_spec(path)


# ---------------------------------------------------------------------------------------------- commands


def cmd_validate(args: argparse.Namespace) -> int:
    code = EXIT_OK
    for file in _spec_files(args.specs):
        try:
            loaded = _load(file)
        except SpecError as exc:
            print(exc, file=sys.stderr)
            code = EXIT_USAGE
            continue
        from suite.spec import expand_cases

        n = len(expand_cases(loaded.spec))
        n_series = f", {len(loaded.spec.series)} series" if loaded.spec.series else ""
        print(f"{file}: ok ({loaded.spec.name}, tier {loaded.spec.tier}, {n} case(s){n_series})")
    return code


def cmd_ls(args: argparse.Namespace) -> int:
    from suite.compare import CHECKS
    from suite.data import DATASETS
    from suite.metrics import METRICS
    from suite.models import BUILTIN_NETS, MODEL_SOURCES
    from suite.theory import THEORIES

    pattern = args.pattern
    rows: list[tuple[str, str, str]] = []
    if args.what == "models":
        if pattern and pattern.startswith("timm:"):
            from suite.models.timm_source import timm_model_names

            for name in timm_model_names(pattern[5:] or "*"):
                print(f"timm:{name}")
            return EXIT_OK
        for name, b in MODEL_SOURCES.items():
            rows.append((f"source {name}", b.doc, MODEL_SOURCES.origin(name)))
        for name, b in BUILTIN_NETS.items():
            rows.append((f"builtin:{name}", b.doc, BUILTIN_NETS.origin(name)))
        rows = [r for r in rows if not pattern or __import__("fnmatch").fnmatch(r[0], pattern)]
    elif args.what == "specs":
        for file in _spec_files([args.specs_dir]):
            try:
                loaded = _load(file)
                from suite.spec import expand_cases

                rows.append((str(file), f"{loaded.spec.tier}: {loaded.spec.reference}", f"{len(expand_cases(loaded.spec))} cases"))
            except SpecError as exc:
                rows.append((str(file), f"INVALID: {exc.locations[0]}", ""))
    else:
        registry = {"datasets": DATASETS, "metrics": METRICS, "theories": THEORIES, "checks": CHECKS}[args.what]
        rows = [(name, entry.doc, registry.origin(name)) for name, entry in registry.items() if name in registry.names(pattern)]
    width = max((len(r[0]) for r in rows), default=0)
    for name, doc, origin in rows:
        shown = origin if (args.verbose or args.what == "specs") else ""
        print(f"{name:<{width}}  {doc}" + (f"  [{shown}]" if shown else ""))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from suite.spec import spec_json_schema

    text = json.dumps(spec_json_schema(), indent=2, sort_keys=True) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        from suite.runner.store import atomic_write_text

        atomic_write_text(Path(args.output), text)
        print(f"wrote {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from suite.compare.baseline import baseline_path, load_baselines
    from suite.spec import expand_cases
    from suite.spec.expand import select_cases

    code = EXIT_OK
    for loaded in _load_specs(args.specs, args.tier):
        file = loaded.path
        cases = select_cases(expand_cases(loaded.spec), args.select)
        if not cases:
            print(f"{file}: nothing selected", file=sys.stderr)
            code = worst([code, EXIT_EMPTY])
            continue
        baselines = load_baselines(baseline_path(Path(args.baselines_dir), loaded.spec.name), loaded.spec.name)
        print(f"# {loaded.spec.name} ({file}, tier {loaded.spec.tier}): {len(cases)} case(s)")
        for case in cases:
            entry = baselines.cases.get(case.id)
            state = "no baseline" if entry is None else ("baseline ok" if entry.state(case.hash) == "ok" else "baseline STALE")
            checks = ", ".join(f"{c.kind}:{c.key}" for c in case.checks) or "no checks"
            print(f"{case.id:<40} {case.hash}  {state:<14} {checks}")
    return code


def _compare_and_report(loaded, cases, run, args) -> int:
    from suite.compare.baseline import baseline_path, load_baselines
    from suite.compare.engine import compare_run, exit_code
    from suite.report import render_report
    from suite.runner.store import atomic_write_text

    from suite.spec import expand_cases

    spec = loaded.spec
    baselines = load_baselines(baseline_path(Path(args.baselines_dir), spec.name), spec.name)
    comparison = compare_run(cases, run, baselines, spec.timing, spec.series, expand_cases(spec))
    atomic_write_text(run.verdicts_path, json.dumps([v.to_json() for v in comparison.verdicts], indent=1, default=str) + "\n")
    code = exit_code(comparison)
    if not getattr(args, "no_report", False):
        report = Path(args.reports_dir) / f"{spec.name}.md"
        atomic_write_text(report, render_report(spec, cases, comparison, run.meta(), report.with_suffix("")))
        print(f"report: {report}", file=sys.stderr)
    counts = ", ".join(f"{n} {k}" for k, n in comparison.counts().items() if n)
    print(f"{spec.name}: {counts} (run {run.id}) -> exit {code}")
    for v in comparison.verdicts:
        if v.status in ("fail", "error", "stale", "new", "warn"):
            print(f"  {v.status.upper():6} {v.case_id} {v.check}: {v.reason}")
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from suite.runner import RunOptions, execute
    from suite.spec import expand_cases
    from suite.spec.expand import select_cases

    loaded_specs = _load_specs(args.specs, args.tier)  # validate all before running any
    if not loaded_specs:
        print("no spec selected", file=sys.stderr)
        return EXIT_EMPTY
    codes = []
    for loaded in loaded_specs:
        cases = select_cases(expand_cases(loaded.spec), args.select)
        if not cases:
            print(f"{loaded.path}: nothing selected by {args.select}", file=sys.stderr)
            codes.append(EXIT_EMPTY)
            continue
        options = RunOptions(
            runs_dir=Path(args.runs_dir),
            device=args.device,
            cache=args.cache,
            run_id=args.run_id if len(loaded_specs) == 1 else None,
            progress=args.progress,
            argv=sys.argv[1:],
        )
        print(f"{loaded.spec.name}: {len(cases)} case(s)", file=sys.stderr)
        run = execute(loaded.spec, loaded.path, cases, options)
        codes.append(_compare_and_report(loaded, cases, run, args))
    return worst(codes)


def _run_and_cases(args: argparse.Namespace):
    from suite.runner.store import RunDir
    from suite.spec import expand_cases

    run = RunDir.open(Path(args.runs_dir), args.run)
    meta = run.meta()
    loaded = _load(Path(args.spec or meta["spec_path"]))
    wanted = set(meta.get("cases", []))
    cases = [c for c in expand_cases(loaded.spec) if c.id in wanted]
    return loaded, cases, run


def cmd_compare(args: argparse.Namespace) -> int:
    loaded, cases, run = _run_and_cases(args)
    args.no_report = True
    return _compare_and_report(loaded, cases, run, args)


def cmd_report(args: argparse.Namespace) -> int:
    loaded, cases, run = _run_and_cases(args)
    return _compare_and_report(loaded, cases, run, args)


def cmd_baseline_update(args: argparse.Namespace) -> int:
    from suite.compare.engine import update_baselines
    from suite.spec.expand import select_cases

    loaded, cases, run = _run_and_cases(args)
    cases = select_cases(cases, args.select)
    if not cases:
        print("nothing selected", file=sys.stderr)
        return EXIT_EMPTY
    path, changes = update_baselines(cases, run, Path(args.baselines_dir), loaded.spec.name, force=args.force)
    changed = 0
    for ch in changes:
        if ch.kind != "unchanged":
            print(f"{ch.kind:10} {ch.case_id}")
            for line in ch.lines[:20]:
                print(f"    {line}")
            changed += ch.kind in ("added", "changed")
    print(f"{path}: {changed} case(s) added or changed, {sum(c.kind == 'unchanged' for c in changes)} unchanged")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    import time as _time

    from suite.bench import PAIRS, run_pair
    from suite.runner.environment import device_class, provenance, resolve_device
    from suite.runner.store import atomic_write_text

    names = PAIRS.names(args.pattern)
    if not names:
        print(f"no benchmark pair matches {args.pattern!r}; known: {', '.join(PAIRS.names())}", file=sys.stderr)
        return EXIT_EMPTY
    device = resolve_device(args.device)
    results = []
    for name in names:
        for size in args.size or ["default"]:
            print(f"{name} [{size}] on {device} ...", file=sys.stderr)
            results.append(run_pair(name, device, size, rounds=args.rounds))
    rows = [
        [r.name, r.size, r.device, f"{r.ours.median_s:.4f}", f"{r.reference.median_s:.4f}", f"{r.speedup:.2f}x",
         "-" if r.target is None else f">= {r.target:g}x", {None: "-", True: "met", False: "MISSED"}[r.met]]
        for r in results
    ]
    from tabulate import tabulate

    print(tabulate(rows, headers=["pair", "size", "device", "ours s", "reference s", "speed-up", "target", ""], tablefmt="github"))
    if args.output:
        out = Path(args.output)
        if out.suffix != ".json":  # a folder: one file per device class and pattern, so runs do not overwrite each other
            tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", args.pattern).strip("_") if args.pattern else ""
            out = out / (f"bench-{device_class(device)}-{tag}.json" if tag else f"bench-{device_class(device)}.json")
        payload = {"date": _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime()), "rounds": args.rounds,
                   "machine": provenance(device), "results": [r.to_json() for r in results]}
        atomic_write_text(out, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ranksuite", description="Declarative benchmarks of rank and dimension in neural networks.")
    parser.add_argument("--version", action="version", version=f"ranksuite {__import__('suite').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def paths(p: argparse.ArgumentParser, runs: bool = True) -> None:
        p.add_argument("--baselines-dir", default="baselines", help="folder of baseline files (default: baselines)")
        p.add_argument("--reports-dir", default="reports", help="folder reports are written to (default: reports)")
        if runs:
            p.add_argument("--runs-dir", default="runs", help="folder of run results (default: runs)")

    p = sub.add_parser("validate", help="validate spec files; errors as file:line:col")
    p.add_argument("specs", nargs="+", help="spec files or folders")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("ls", help="list models, datasets, metrics, theories, checks or specs")
    p.add_argument("what", choices=["models", "datasets", "metrics", "theories", "checks", "specs"])
    p.add_argument("pattern", nargs="?", help="fnmatch filter; for models, 'timm:<pattern>' lists timm names")
    p.add_argument("--verbose", "-v", action="store_true", help="show where each entry is registered")
    p.add_argument("--specs-dir", default="specs")
    p.set_defaults(fn=cmd_ls)

    p = sub.add_parser("schema", help="write the JSON schema of specs (for YAML editor plugins)")
    p.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("plan", help="show the cases a spec expands to, with hashes and baseline state")
    p.add_argument("specs", nargs="+")
    p.add_argument("--select", action="append", help="fnmatch pattern on case ids (repeatable)")
    p.add_argument("--tier", nargs="+", choices=["smoke", "ci", "full", "paper"])
    paths(p, runs=False)
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("run", help="run specs, compare with baselines, write reports")
    p.add_argument("specs", nargs="+", help="spec files or folders of specs")
    p.add_argument("--tier", nargs="+", choices=["smoke", "ci", "full", "paper"], help="only specs of these tiers")
    p.add_argument("--select", action="append", help="fnmatch pattern on case ids (repeatable)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the spec's device")
    p.add_argument("--cache", choices=["always", "never", "only-missing"], default="only-missing",
                   help="reuse results of earlier runs with the same case hash and device class: only-missing "
                        "(default) reuses successes, always also reuses errors and skips, never recomputes")
    p.add_argument("--run-id", help="run id (an existing one resumes that run)")
    p.add_argument("--no-report", action="store_true", help="do not write the Markdown report")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None, help="force the progress bar")
    prog.add_argument("--no-progress", dest="progress", action="store_false", help="one line per case instead")
    paths(p)
    p.set_defaults(fn=cmd_run)

    for name, fn, helptext in (
        ("compare", cmd_compare, "compare a finished run with the baselines (no report)"),
        ("report", cmd_report, "compare a finished run and render its report"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("run", help="run id, run folder, or 'latest'")
        p.add_argument("--spec", help="spec file (default: the one the run recorded)")
        paths(p)
        p.set_defaults(fn=fn)

    p = sub.add_parser("bench", help="time ours vs the naive reference of each benchmark pair, in one process")
    p.add_argument("pattern", nargs="?", help="fnmatch filter on pair names")
    p.add_argument("--size", action="append", help="problem size(s) the pair understands (default: default)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per side (median reported)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--output", "-o", help="JSON file or folder for the results (e.g. benchmarks/results)")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("baseline", help="manage baselines")
    bsub = p.add_subparsers(dest="baseline_command", required=True, parser_class=_Parser)
    u = bsub.add_parser("update", help="write baselines from a run and print the diff")
    u.add_argument("run", help="run id, run folder, or 'latest'")
    u.add_argument("--spec", help="spec file (default: the one the run recorded)")
    u.add_argument("--select", action="append", help="only cases matching these fnmatch patterns")
    u.add_argument("--force", action="store_true", help="also overwrite entries with source: paper")
    paths(u)
    u.set_defaults(fn=cmd_baseline_update)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ranksuite`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help/--version (0) and usage errors (3) return like every other outcome
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return args.fn(args)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except RanksuiteError as exc:
        print(f"ranksuite: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _console() -> Any:  # console-script entry point
    sys.exit(main())


if __name__ == "__main__":
    _console()
