"""`fashionlens refit-heads MODEL CONFIG`: refit a model's heads on frozen features, each
also reading the backbone's tapped stages (`training.refit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from .common import Overrides, load_run_config, out


def refit_heads_command(
    model: Annotated[str, typer.Argument(metavar="NAME_OR_PATH",
                                         help="A trained model: a bundled name, a model "
                                              "folder or a run folder.")],
    config: Annotated[Path, typer.Argument(help="The run config the model was trained "
                                                "with (its photos, sources and tasks).")],
    heads: Annotated[str, typer.Option(help="Comma-separated head names to refit.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Where the refit model (OUT/model), "
                                                        "refit.json and the cached "
                                                        "features go.")],
    epochs: Annotated[int, typer.Option(min=1, max=200, help="Passes over the frozen "
                                                             "features.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    colour_statistics: Annotated[str, typer.Option(
        "--colour-statistics", help="Comma-separated heads (among --heads) that also read "
                                    "the photo's colour histograms, e.g. the colour "
                                    "heads.")] = "",
    add_classes: Annotated[bool, typer.Option(
        "--add-classes", help="Let a classification head (not the first) learn classes "
                              "the config has and it lacks, e.g. article types of photos "
                              "its training left out.")] = False,
    overrides: Overrides = None,
) -> None:
    """Refit heads of a trained model without touching its backbone or search vector.

    Each named head starts from its trained weights and gains a term reading the
    backbone's tapped stages; a head is kept only where it scores higher on the config's
    validation photos. Needs the train extra."""
    names = [n.strip() for n in heads.split(",") if n.strip()]
    if not names:
        raise ConfigError("--heads: name at least one head")
    if not config.is_file():
        raise ConfigError(f"{config}: no such config file")
    run_config = load_run_config(config, overrides, {}, {})

    from ..training.refit import refit_heads

    result = refit_heads(model, run_config, names, out_dir, config_path=config,
                         epochs=epochs, seed=seed,
                         colour_heads=[n.strip() for n in colour_statistics.split(",")
                                       if n.strip()],
                         add_classes=add_classes,
                         report=lambda line: out.print(line, highlight=False))
    kept = [h.name for h in result.heads if h.kept]
    out.print(f"wrote {result.model_dir} (refit kept for: {', '.join(kept) or 'none'}; "
              f"features {result.seconds['features']:.0f} s, fitting "
              f"{result.seconds['fitting']:.0f} s)", highlight=False)
