"""User-facing errors: each one says which file, column or field is wrong.

The CLI prints these as one readable line instead of a traceback.
"""


def shorten(text: str, limit: int) -> str:
    """Text quoted in an error message, cut to `limit` characters (ending in '...')."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


class FashionLensError(Exception):
    """Base class for errors caused by user input rather than by a bug."""


class ConfigError(FashionLensError):
    """A config file or override names an unknown field or holds a bad value."""


class DataError(FashionLensError):
    """A dataset (folder or CSV) cannot be used as given."""


class ImageError(FashionLensError):
    """One image file cannot be read as a photo."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Rebuilt from (path, reason) when it crosses from a DataLoader worker process.
        return (type(self), (self.path, self.reason))


class UnknownItemError(FashionLensError):
    """A catalog has no item with the id asked for."""

    def __init__(self, catalog: object, item_id: str) -> None:
        self.item_id = item_id
        super().__init__(f"{catalog}: no item with id '{item_id}'")

    def __reduce__(self):
        return (type(self), (str(self).rsplit(": no item with id", 1)[0], self.item_id))


class ModelError(FashionLensError):
    """A model artifact or checkpoint cannot be loaded."""


def _ids_text(item_ids: list[str]) -> str:
    shown = ", ".join(f"'{i}'" for i in item_ids[:5]) + (" ..." if len(item_ids) > 5 else "")
    return f"item id {shown} already exists" if len(item_ids) == 1 else \
        f"item ids {shown} already exist"


class ItemExistsError(FashionLensError):
    """An item id is already taken (e.g. another process added it first)."""

    def __init__(self, catalog: object, item_ids: list[str] | str) -> None:
        self.catalog = str(catalog)
        self.item_ids = [item_ids] if isinstance(item_ids, str) else list(item_ids)
        super().__init__(f"{self.catalog}: {_ids_text(self.item_ids)}")

    def __reduce__(self):
        return (type(self), (self.catalog, self.item_ids))


class CatalogBusyError(FashionLensError):
    """Another process held a catalog's write lock for longer than we were willing to wait."""

    def __init__(self, catalog: object, waited_s: float) -> None:
        self.catalog = str(catalog)
        self.waited_s = float(waited_s)
        super().__init__(f"{self.catalog}: catalog is busy: another process has been writing "
                         f"to it for over {self.waited_s:g} s; try again later")

    def __reduce__(self):
        return (type(self), (self.catalog, self.waited_s))
