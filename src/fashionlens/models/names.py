"""What a person reads for a model's tasks and classes.

A task is named after the data column it learned (`articleType`, `baseColour`) and some
classes are placeholders of the data (`NA`: the column was empty; `other`: rare values
folded together). Those are right for code and files, not for the web app's headings or
a model card's: this one mapping gives the words shown instead (GET /api/v1/models lists
each task's `title` and `class_titles`). A name not listed here is shown with its words
split (`sleeveLength` -> "Sleeve length").

No torch import: the service's model listing uses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Task (head / column) names -> headings. A one-task model's head is called "label"
# whatever it learned (garment types, colours, ...): "Class" claims nothing more.
TASK_TITLES = {
    "label": "Class",
    # The joint model's one taxonomy of garment types, and the catalogue's finer product
    # types beside it (watches, perfume and handbags are products, not garments).
    "type": "Garment type",
    "articleType": "Product type",
    "masterCategory": "Category",
    "subCategory": "Sub-category",
    "baseColour": "Colour",
    "colour": "Colour group",  # the coarse groups, beside baseColour in the joint model
    "usage": "Occasion",
    "season": "Season",
    "gender": "Gender",
    "tags": "Tags",
}

# Placeholder classes -> what they mean.
CLASS_TITLES = {
    "NA": "not given",
    "other": "other (rarer values)",
}


def task_title(name: str) -> str:
    """The heading for a task: 'articleType' -> 'Product type', 'sleeve_length' ->
    'Sleeve length'."""
    if name in TASK_TITLES:
        return TASK_TITLES[name]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(name)).replace("_", " ").replace("-", " ")
    words = " ".join(words.split()).lower()
    return words[:1].upper() + words[1:] if words else str(name)


def class_title(name: str) -> str:
    """What a class is called on screen ('NA' -> 'not given'); most classes as they are."""
    return CLASS_TITLES.get(name, name)


def class_titles(classes: Iterable[str]) -> dict[str, str]:
    """The classes shown under another name, {class: shown}; the others are left out."""
    return {c: class_title(c) for c in classes if class_title(c) != c}
