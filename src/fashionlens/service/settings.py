"""What a running service is configured with: models, catalog, limits and security.

One dataclass, filled from `fashionlens serve` options, the `FASHIONLENS_API_KEY`
environment variable, or a YAML file (`serve --config service.yaml`), so the same checks
apply whichever way a deployment is set up.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..models.resolve import DEFAULT_NAME, bundled_models

API_KEY_ENV = "FASHIONLENS_API_KEY"
DEFAULT_MAX_UPLOAD_MB = 10.0
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_SECONDS = (0.001, 3600, "a number of seconds")
_WHOLE = "a whole number"
# Each numeric setting's range: beyond it a value is a typo or an attack on the server
# (a 1e8 ms batch wait stalls every request; 1e11 cache entries, an inf upload limit).
_BOUNDS: dict[str, tuple[float, float, str]] = {
    "max_upload_mb": (0.01, 4096, "a number of megabytes"),
    "max_json_kb": (1, 100 * 1024, "a number of kilobytes"),
    "header_timeout_s": _SECONDS, "body_timeout_s": _SECONDS, "keep_alive_s": _SECONDS,
    "shutdown_timeout_s": _SECONDS, "trim_idle_s": _SECONDS,
    "batch_wait_ms": (0, 1000, "a number of milliseconds"),
    "max_batch": (1, 1024, _WHOLE),
    "cache_entries": (0, 1_000_000, _WHOLE),
    "max_image_side": (16, 100_000, _WHOLE),
    "decode_memory_mb": (64, 1024 * 1024, "a number of megabytes"),
    "port": (1, 65535, _WHOLE),
}


def _shown(number: float) -> str:
    return f"{int(number):,}" if float(number).is_integer() else f"{number:g}"


@dataclass
class ServiceSettings:
    """Everything `create_app` needs; defaults are the safe choices (loopback, no CORS)."""

    # Models to serve (names or folders; `model_specs`); empty means every bundled model.
    # The first is the default.
    models: list[str] = field(default_factory=list)
    catalog: str | None = None
    # Write endpoints need this key; without one they are refused altogether.
    api_key: str | None = None
    # Also require the key for every read endpoint (not for /healthz, /readyz or the web app).
    protect_reads: bool = False
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    # Bodies of every other request (JSON, forms without a photo) are small: a huge one
    # could only tie up the catalog thread.
    max_json_kb: float = 64.0
    # Slow clients: a request's headers must arrive within header_timeout_s of the
    # connection opening (or of the previous response), its body within body_timeout_s
    # of waiting for it; an idle keep-alive connection closes after keep_alive_s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keep_alive_s: float = 5.0
    # On SIGTERM/Ctrl-C, requests still running after this many seconds are cancelled.
    shutdown_timeout_s: float = 10.0
    # After a burst of requests, memory freed by it is given back to the system once the
    # service has been idle this long.
    trim_idle_s: float = 5.0
    # ISO 4217 code prices are in (EUR, USD, ...); None shows bare numbers.
    currency: str | None = None
    # Origins allowed to call the API from another site; empty means CORS stays off.
    cors_origins: list[str] = field(default_factory=list)
    # Micro-batching: how long the first request of a batch waits for others, and the cap.
    batch_wait_ms: float = 4.0
    max_batch: int = 16
    # Recent photos' model outputs kept so classify-then-similar of one photo runs the
    # model once (0 turns the cache off).
    cache_entries: int = 256
    # Photos whose width or height exceeds this are refused before decoding.
    max_image_side: int = 20_000
    # Memory all photos being decoded at once may hold; a decode that does not fit waits
    # for others to finish (one photo alone may take up to data.images.MAX_DECODE_BYTES).
    decode_memory_mb: float = 1024.0
    # What runs the models and the catalog's embedder (inference.backends.RUNTIMES);
    # vectors match across runtimes, so a catalog built with one is served with another.
    runtime: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    # A review queue (`fashionlens review DATA`) for the Review page; its decisions file
    # goes beside it.
    review: str | None = None
    # The review queue and its photos need the API key unless this is set (a dataset is
    # the shop's own; decisions need the key either way).
    public_review: bool = False

    def model_specs(self) -> list[str]:
        """The models to load: those named, else every bundled one with the default
        (`resolve.DEFAULT_NAME`) first, so it answers requests that name no model. A
        bundled model added to the package is served without any setting."""
        if self.models:
            return list(self.models)
        bundled = bundled_models()
        if DEFAULT_NAME in bundled or not bundled:  # none at all: 'default' says why
            return ["default", *(name for name in bundled if name != DEFAULT_NAME)]
        return list(bundled)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_kb * 1024)

    @property
    def decode_memory_bytes(self) -> int:
        return int(self.decode_memory_mb * 1024 * 1024)

    def check(self) -> ServiceSettings:
        """Raise ConfigError for values the service cannot run with, naming the setting
        and its range (a YAML file can hold any type; `inf` parses as a float)."""
        for name, (low, high, what) in _BOUNDS.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if what == "a whole number" and number and isinstance(value, float) \
                    and value.is_integer() and low <= value <= high:
                value = int(value)  # 1e3 in YAML is a float
                setattr(self, name, value)
            ok = number and math.isfinite(value) and low <= value <= high and (
                what != "a whole number" or isinstance(value, int))
            if not ok:
                raise ConfigError(f"{name} must be {what} from {_shown(low)} to "
                                  f"{_shown(high)}, not {value!r}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key must be at least 8 characters long")
        if self.protect_reads and not self.api_key:
            raise ConfigError("protect_reads needs an API key")
        if self.currency is not None:
            code = str(self.currency).strip().upper()
            if not _CURRENCY.match(code):
                raise ConfigError(f"currency must be a three-letter ISO 4217 code such as "
                                  f"EUR or USD, not {self.currency!r}")
            self.currency = code
        from ..inference.backends import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, "
                              f"not {self.runtime!r}")
        return self

    def with_environment(self) -> ServiceSettings:
        """Take the API key from FASHIONLENS_API_KEY when none was given explicitly."""
        if not self.api_key and os.environ.get(API_KEY_ENV):
            return dataclasses.replace(self, api_key=os.environ[API_KEY_ENV])
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> ServiceSettings:
        """Read a YAML mapping of these fields; `overrides` (non-None values) win."""
        path = Path(path).expanduser()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (a YAML file of service settings "
                              "is UTF-8 text)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of service settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown service setting(s) {', '.join(unknown)}; "
                              f"settings are {', '.join(sorted(known))}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("models", "cors_origins"):
            if isinstance(data.get(name), str):
                data[name] = [data[name]]
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
