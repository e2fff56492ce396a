"""The augmentation settings (the `augment:` section of a run config), without torch:
reading and checking a run config imports no torch; `data.transforms` builds the steps."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AugmentConfig:
    """Augmentation for photos taken at home on a phone: framing, tilt, light, colour cast."""

    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (0.75, 1.333)
    hflip: float = 0.5
    rotation: float = 15.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.0  # hue shifts cost ~3 ms a photo and change what colour a garment is
    grayscale: float = 0.05
    trivial_augment: bool = False
    random_erasing: float = 0.0
    # Studio shots (plain white background) laid on a random surface, this probability a
    # photo; colour-safe (no garment pixel changes), so it stays on for colour tasks.
    backdrop: float = 0.0
    backdrop_shrink: tuple[float, float] = (0.6, 1.0)  # garment size on its new surface
    extra: dict = field(default_factory=dict)

    def problems(self) -> list[tuple[str, str]]:
        """(field, reason) for each value torchvision would refuse or misread."""
        found = []
        for name in ("hflip", "grayscale", "random_erasing", "backdrop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                found.append((name, f"is a probability, between 0 and 1; got {value}"))
        for name in ("brightness", "contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                found.append((name, f"must be between 0 and 1, got {value}"))
        if not 0.0 <= self.hue <= 0.5:
            found.append(("hue", f"must be between 0 and 0.5, got {self.hue}"))
        if not 0.0 <= self.rotation <= 180.0:
            found.append(("rotation", f"must be between 0 and 180 degrees, got {self.rotation}"))
        for name, top in (("scale", 1.0), ("ratio", 10.0), ("backdrop_shrink", 1.0)):
            pair = tuple(getattr(self, name))
            if len(pair) != 2 or not 0.0 < pair[0] <= pair[1] <= top:
                found.append((name, f"must be two numbers [low, high] with 0 < low <= high <= "
                                    f"{top:g}, got {list(pair)}"))
        return found
