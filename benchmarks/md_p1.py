"""RESULTS.md section of benchmarks/p1_like_for_like.py: like-for-like P1 over seeds, the control row, the
method the validation split chooses, and whether torchslim's default beats Torch-Pruning's by more than
two standard errors."""

from __future__ import annotations

import json
import math

import common
import numpy as np
from md_common import fmt_pct, fmt_top1, machine_line, md_table, mean_sd

TP_NAMES = {
    "default": "Torch-Pruning default: MagnitudeImportance() (L2, group mean)",
    "group-l1": "Torch-Pruning MagnitudeImportance(p=1) (group L1)",
    "l1-first": "Torch-Pruning MagnitudeImportance(p=1, group_reduction=first)",
    "taylor": "Torch-Pruning TaylorImportance",
    "bn-scale": "Torch-Pruning BNScaleImportance",
}
TP_EQUIVALENT = {"l1_group": "group-l1", "taylor": "taylor", "bn_scale": "bn-scale", "l1_norm": "l1-first"}


def read_payloads() -> dict[str, dict]:
    """Model -> its p1_like_for_like results, in file-name order."""
    return {
        payload["model"]: payload
        for payload in (
            json.loads(path.read_text()) for path in sorted(common.RESULTS.glob("p1_like_for_like-*.json"))
        )
    }


def label(key: str, default: str) -> str:
    """A unit key (``torchslim:l1_norm+rec``) as a table row name."""
    if key == "control":
        return "control: unpruned baseline, same fine-tune"
    tool, method = key.split(":", 1)
    if tool == "torch-pruning":
        return TP_NAMES.get(method, f"Torch-Pruning {method}")
    criterion, rec = method.removesuffix("+rec"), method.endswith("+rec")
    text = f"torchslim {criterion}" + (" + reconstruction" if rec else "")
    return text + (" (torchslim default)" if rec and criterion == default else "")


def _seed_values(unit: dict, field: str) -> list[float]:
    return [entry[field] for _, entry in sorted(unit.items()) if entry.get(field) is not None]


def _mean_or_dash(unit: dict, field: str) -> str:
    values = _seed_values(unit, field)
    return fmt_top1(float(np.mean(values))) if values else "-"


def _row(key: str, unit: dict, default: str, control: float | None) -> list[str]:
    entries = list(unit.values())
    hit = all(entry.get("hit", True) for entry in entries)
    test = _seed_values(unit, "test_top1")
    versus = "-" if control is None or key == "control" else f"{np.mean(test) - control:+.2f}"
    return [
        label(key, default),
        fmt_pct(float(np.mean([e["macs_left"] for e in entries]))) + ("" if hit else " *"),
        _mean_or_dash(unit, "val_after_prune"),
        _mean_or_dash(unit, "val_after_bn"),
        _mean_or_dash(unit, "val_after_rec"),
        mean_sd(_seed_values(unit, "val_top1")),
        mean_sd(test),
        versus,
        str(len(test)),
    ]


HEADERS = [
    "method",
    "MACs left",
    "val, after prune",
    "val, after BN",
    "val, after reconstruction",
    "val top-1, fine-tuned",
    "test top-1, fine-tuned",
    "vs control (pt)",
    "seeds",
]


def compare(ours: list[float], theirs: list[float]) -> tuple[float, float | None]:
    """(difference of the means, its standard error from the seed spread; None with one seed a side)."""
    difference = float(np.mean(ours) - np.mean(theirs))
    if len(ours) < 2 or len(theirs) < 2:
        return difference, None
    return difference, math.sqrt(np.var(ours, ddof=1) / len(ours) + np.var(theirs, ddof=1) / len(theirs))


def verdict(ours: list[float], theirs: list[float], their_name: str) -> str:
    """Whether the first beats the second on test top-1 by more than two standard errors, in words."""
    difference, error = compare(ours, theirs)
    if error is None:
        return f"{difference:+.2f} pt against {their_name} (one seed: no standard error, no verdict)"
    if difference > 2 * error:
        word = "beats"
    elif difference < -2 * error:
        word = "loses to"
    else:
        word = "is within 2 standard errors of"
    return f"{word} {their_name} ({difference:+.2f} pt, standard error {error:.2f} pt)"


def _model_lines(name: str, payload: dict, goals: list) -> list[str]:
    default = payload["torchslim_default"]
    units, base = payload["units"], payload["baseline"]
    order = [k for k in payload.get("units_order", units) if k in units]
    control = _seed_values(units.get("control", {}), "test_top1")
    control_mean = float(np.mean(control)) if control else None
    rows = [_row(key, units[key], default, control_mean) for key in order]
    plateau = "plateau reached" if base.get("plateau") else "**no plateau** (epoch cap)"
    lines = [
        f"### {name}",
        "",
        f"Baseline: {base['epochs']} epochs ({plateau}; last epoch "
        f"{_last_gain(base['val_top1_per_epoch'])} pt validation top-1), validation top-1 "
        f"{base['val_top1_per_epoch'][-1]:.2f}%, test top-1 {base['test_top1']:.2f}%, {base['macs']:,} MACs.",
        "",
    ]
    lines += md_table(HEADERS, rows) + [""]
    ours = _seed_values(units.get(f"torchslim:{default}+rec", {}), "test_top1")
    for key, what in (
        ("torch-pruning:default", "Torch-Pruning's default"),
        (f"torch-pruning:{TP_EQUIVALENT.get(default, '')}", "its equivalent method"),
    ):
        theirs = _seed_values(units.get(key, {}), "test_top1")
        if ours and theirs:
            text = verdict(ours, theirs, f"{what} ({label(key, default)})")
            lines += [f"- {name}: torchslim's default ({label(f'torchslim:{default}+rec', default)}) {text}."]
            goals.append(
                ("P1", f"{name}: torchslim default beats {what} by > 2 SE", text, text.startswith("beats"))
            )
    return lines + [""]


def _last_gain(history: list[float]) -> str:
    return f"{history[-1] - history[-2]:+.2f}" if len(history) > 1 else "n/a"


def chosen_by_validation(payloads: dict[str, dict]) -> list[str]:
    """The torchslim criterion + recovery with the best validation top-1, per model and on average."""
    means: dict[str, dict[str, float]] = {}
    for name, payload in payloads.items():
        for key, unit in payload["units"].items():
            values = _seed_values(unit, "val_top1")
            if key.startswith("torchslim:") and values:
                means.setdefault(key, {})[name] = float(np.mean(values))
    complete = {k: v for k, v in means.items() if len(v) == len(payloads)}
    if not complete:
        return []
    default = next(iter(payloads.values()))["torchslim_default"]
    best = max(complete, key=lambda k: np.mean(list(complete[k].values())))
    per_model = ", ".join(
        f"{name} {max((k for k in complete), key=lambda k, n=name: complete[k][n]).split(':', 1)[1]}"
        for name in payloads
    )
    average = np.mean(list(complete[best].values()))
    return [
        f"Chosen on the validation split (never the test set): `{best.split(':', 1)[1]}` "
        f"({label(best, default)}), mean fine-tuned validation top-1 {average:.2f}% over "
        f"{len(payloads)} model(s); best per model: {per_model}. `+rec`: BN re-estimation, then "
        "reconstruction; the others: BN re-estimation.",
        "",
    ]


def p1_like_for_like_section(goals: list) -> list[str]:
    payloads = read_payloads()
    if not payloads:
        return []
    first = next(iter(payloads.values()))
    recipe = first["recipe"]
    lines = [
        "## P1 like for like: equivalent methods, one recipe, seeds (benchmarks/p1_like_for_like.py)",
        "",
        f"Machine: {machine_line(first)}.",
        f"Fashion-MNIST 32x32, -{recipe['target']:.0%} MACs, round_to {recipe['round_to']} for both tools; "
        f"trained on the first {recipe['train_limit']} training images; validation: the last "
        f"{recipe['val_images']} training images (after prune / BN / reconstruction, and the choice of a "
        f"method); test: {recipe['test_limit'] or 'all 10,000'} test images. Fine-tune "
        f"{recipe['finetune_epochs']} epochs, lr {recipe['finetune_lr']} cosine, for every method and the "
        f"control; BN re-estimation on {recipe['bn_batches']} batches, reconstruction on "
        f"{recipe['rec_batches']}. Each seed changes the training order: the pruning batches and the "
        "fine-tune shuffling. Top-1 in %, mean ± sd over seeds. Every method's fine-tune starts from its "
        "BN re-estimated model: fine-tuning reads batch statistics, so without re-estimation it runs the "
        "same. Standard error of a difference: from the seed spreads of both sides. `*` = MACs target "
        "missed by more than 1%.",
        "",
    ]
    lines += chosen_by_validation(payloads)
    for name, payload in payloads.items():
        lines += _model_lines(name, payload, goals)
    return lines
