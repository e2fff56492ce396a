"""The web service and web app: classify photos and find similar items over HTTP.

    from fashionlens.service import ServiceSettings, create_app
    app = create_app(ServiceSettings(catalog="shop/", api_key="a-long-secret"))

`fashionlens serve` runs it with uvicorn; see `fashionlens serve --help`.
"""

from .app import create_app
from .engine import Engine
from .settings import ServiceSettings

__all__ = ["Engine", "ServiceSettings", "create_app"]
