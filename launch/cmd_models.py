"""``brainxl models``: one row per registered model and flavor, with its size and I/O."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "List registered models and flavors with parameter counts and input/output shapes."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--json``, ``--model`` and ``--flavor`` filters."""
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--model", nargs="*", default=None, help="only these model names")
    parser.add_argument("--flavor", nargs="*", default=None, help="only these flavors")


def model_rows(
    models: list[str] | None = None, flavors: list[str] | None = None
) -> list[dict[str, object]]:
    """Rows of the table: name, flavor, params, params_str, input, output, task, notes.

    Parameter counts come from building each model on the ``meta`` device (no memory, no
    initialisation), so even the billion-parameter flavors take milliseconds.
    """
    import torch

    from brainxl.models.registry import count_parameters, format_count, list_models

    registry = list_models()
    unknown = sorted(set(models or ()) - set(registry))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; registered: {sorted(registry)}")
    rows = []
    for name in sorted(registry):
        if models and name not in models:
            continue
        spec = registry[name]
        for flavor, cfg in spec.flavors.items():
            if flavors and flavor not in flavors:
                continue
            with torch.device("meta"):
                n = count_parameters(spec.build(flavor))
            inp, out = spec.describe_io(flavor)
            rows.append(
                {
                    "name": name,
                    "flavor": flavor,
                    "params": n,
                    "params_str": format_count(n),
                    "input": inp,
                    "output": out,
                    "task": spec.task,
                    "notes": "ZeRO-3 only" if cfg.get("zero3_only") else "",
                }
            )
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    """Render rows as an aligned text table."""
    cols = [
        ("name", "MODEL"),
        ("flavor", "FLAVOR"),
        ("params_str", "PARAMS"),
        ("input", "INPUT"),
        ("output", "OUTPUT"),
        ("task", "TASK"),
        ("notes", "NOTES"),
    ]
    widths = [max(len(title), *(len(str(r[key])) for r in rows)) for key, title in cols]
    lines = ["  ".join(t.ljust(w) for (_, t), w in zip(cols, widths)).rstrip()]
    for r in rows:
        lines.append("  ".join(str(r[k]).ljust(w) for (k, _), w in zip(cols, widths)).rstrip())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the model table (or JSON); returns the exit code."""
    try:
        rows = model_rows(args.model, args.flavor)
    except ValueError as err:
        print(f"brainxl models: {err}", file=sys.stderr)
        return 2
    if not rows:
        print("brainxl models: no model/flavor matches the filters", file=sys.stderr)
        return 1
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
