"""Combine two runs that share one backbone: the named heads from the second, the rest
from the first (per-head model selection on the runs' common validation photos).

    python tools/pick_heads.py runs/fashion-final runs/fashion-stage2 \\
        --heads articleType,baseColour,colour,usage,gender --out runs/fashion-picked

Refused unless every backbone tensor of the two models is identical (a head is a linear
map of the pooled features, so it fits any model with the same backbone and nothing
else) and both runs validated on the same photos (their validation.txt), so that their
per-head figures can be compared and merged. Writes OUT/model (the first run's model and
embedding head, the named heads' weights and specs from the second run), OUT/metrics.json
(the first run's, each named head's validation figures the second run's, and a `picked`
entry saying which head came from where) and the first run's other report files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from fashionlens.models import load_model, save_model
from fashionlens.models.embedding import tap_channels
from fashionlens.models.heads import add_stage_term, head_module, stage_term, term_inputs

HEAD_PREFIXES = ("classifier.", "task_heads.", "embedding_head.", "stage_terms.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path, help="run folder giving the backbone and the "
                                                 "other heads")
    parser.add_argument("second", type=Path, help="run folder giving the named heads")
    parser.add_argument("--heads", required=True, help="comma-separated head names")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    names = [n for n in args.heads.split(",") if n]
    for run in (args.first, args.second):
        if not (run / "validation.txt").is_file():
            parser.error(f"{run}: no validation.txt (needed to check the runs validated on "
                         "the same photos)")
    if (args.first / "validation.txt").read_text() != \
            (args.second / "validation.txt").read_text():
        parser.error("the two runs validated on different photos: their figures cannot be "
                     "compared")
    model, info = load_model(args.first / "model")
    donor, donor_info = load_model(args.second / "model")
    own, given = model.state_dict(), donor.state_dict()
    differing = [k for k, v in own.items() if not k.startswith(HEAD_PREFIXES)
                 and (k not in given or not torch.equal(v, given[k]))]
    if differing:
        parser.error(f"the backbones differ ({len(differing)} tensors, e.g. {differing[0]})")
    specs = {h.name: h for h in donor_info.heads}
    for name in names:
        if name not in specs or name not in {h.name for h in info.heads}:
            parser.error(f"--heads {name}: not a head of both models")
        target = head_module(model, info.heads, name)
        source = head_module(donor, donor_info.heads, name)
        if target.weight.shape != source.weight.shape:
            parser.error(f"--heads {name}: {len(specs[name].classes)} classes in the second "
                         "run, another number in the first")
        target.load_state_dict(source.state_dict())
        donor_term = stage_term(donor, name) if specs[name].taps else None
        if donor_term is not None:  # the head's term of the tapped stages travels with it
            if term_inputs(specs[name], tap_channels(model)) != donor_term.in_features:
                parser.error(f"--heads {name}: reads tapped stages the first run's model "
                             "does not tap")
            add_stage_term(model, name, donor_term.in_features, donor_term.out_features
                           ).load_state_dict(donor_term.state_dict())
        elif stage_term(model, name) is not None:  # the second run's head reads no taps
            del model.stage_terms[name]
    info.heads = [specs[h.name] if h.name in names else h for h in info.heads]
    summary = json.loads((args.first / "metrics.json").read_text())
    theirs = json.loads((args.second / "metrics.json").read_text())
    for name in names:
        for part in ("tasks", "summary"):
            summary["metrics"][part][name] = theirs["metrics"][part][name]
            if isinstance(info.metrics.get(part), dict):
                info.metrics[part][name] = donor_info.metrics[part][name]
    # the mean over heads was the first run's and mixes both now: left out, not restated
    summary["metrics"]["summary"].pop("score", None)
    summary["picked"] = {"heads_from_second": names, "first": str(args.first.resolve()),
                         "second": str(args.second.resolve())}
    args.out.mkdir(parents=True, exist_ok=True)
    for item in args.first.iterdir():
        if item.is_file() and item.name != "metrics.json":
            shutil.copy2(item, args.out / item.name)
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=2))
    save_model(model, info, args.out / "model")
    print(json.dumps({"out": str(args.out), "heads_from_second": names,
                      "validation": {n: summary["metrics"]["summary"][n]
                                     for n in (h.name for h in info.heads)
                                     if n in summary["metrics"]["summary"]}}, indent=1))


if __name__ == "__main__":
    main()
