"""A shopper's words as a query: the words a catalog can filter on become conditions, the
whole text ranks by meaning.

`plan_words("red striped summer shirt", vocabulary)` finds, longest phrase first, the words
that name a value the catalog holds in one of its fields (its category, colour, and extra
columns such as gender, season, usage or pattern; a field's values are the shop's and, where
the shop gave none, the confident predictions of the catalog's model: the filters' one
rule), through a table of the words shoppers use (navy -> Blue, trousers -> Pants/Trousers,
jumper -> Sweater, tee -> T-Shirt, sneakers -> Shoes/Sports Shoes, floral...). Each such
word becomes a filter on that field (several words on one field: any of them); a word whose
value the catalog does not hold, and every other word, is left to meaning: the whole text's
sentence vector, mapped into the catalog's image-vector space (`alignment`), ranks the items
that pass the conditions.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Fields a word can become a condition on, and the words shoppers use for values that the
# data sets and models name otherwise. Each entry: a value's canonical words -> the
# catalog values (compared after `fold`) and shopper words that mean it. A catalog value
# that no entry names is matched by its own words (singular or plural).
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "category": {
        "t-shirt": ("tshirt", "tshirts", "t-shirt", "t-shirts", "t shirt", "t shirts", "tee",
                    "tees", "tee shirt"),
        "shirt": ("shirt", "shirts", "button down", "button-up"),
        "longsleeve": ("longsleeve", "long sleeve", "long sleeved", "long-sleeve"),
        "pants": ("pants", "trousers", "trouser", "slacks", "chinos", "track pants"),
        "jeans": ("jeans", "denims", "denim jeans"),
        "shorts": ("shorts", "short pants"),
        "skirt": ("skirt", "skirts"),
        "dress": ("dress", "dresses", "gown", "frock"),
        "sweater": ("sweater", "sweaters", "jumper", "jumpers", "pullover", "knit"),
        "sweatshirt": ("sweatshirt", "sweatshirts", "hoodie", "hoodies"),
        "outwear": ("outwear", "outerwear", "coat", "coats", "jacket", "jackets"),
        "jacket": ("jacket", "jackets"),
        "shoes": ("shoes", "shoe", "footwear", "sneakers", "sneaker", "trainers",
                  "casual shoes", "sports shoes", "formal shoes"),
        "sports shoes": ("sports shoes", "sneakers", "sneaker", "trainers", "running shoes"),
        "casual shoes": ("casual shoes", "sneakers", "sneaker"),
        "heels": ("heels", "high heels", "pumps", "stilettos"),
        "sandals": ("sandals", "sandal"),
        "flip flops": ("flip flops", "flip-flops", "thongs"),
        "hat": ("hat", "hats", "cap", "caps", "beanie"),
        "caps": ("cap", "caps"),
        "watches": ("watch", "watches", "wristwatch"),
        "handbags": ("handbag", "handbags", "purse", "bag"),
        "tops": ("top", "tops"),
        "kurtas": ("kurta", "kurtas"),
        "sunglasses": ("sunglasses", "shades"),
        "socks": ("socks", "sock"),
        "belts": ("belt", "belts"),
        "backpacks": ("backpack", "backpacks", "rucksack"),
    },
    "colour": {
        "blue": ("blue", "navy", "navy blue", "azure", "cobalt"),
        "navy blue": ("navy", "navy blue"),
        "red": ("red", "scarlet", "crimson"),
        "grey": ("grey", "gray"),
        "white": ("white", "ivory"),
        "off white": ("off white", "off-white", "cream", "ivory"),
        "brown": ("brown", "tan", "chocolate"),
        "beige": ("beige", "camel", "khaki", "tan"),
        "khaki": ("khaki",),
        "pink": ("pink", "rose"),
        "purple": ("purple", "violet", "lilac"),
        "green": ("green", "olive", "emerald"),
        "olive": ("olive",),
        "maroon": ("maroon", "burgundy", "wine"),
        "black": ("black",),
        "yellow": ("yellow", "mustard"),
        "gold": ("gold", "golden"),
        "silver": ("silver",),
        "orange": ("orange",),
    },
    "extra.gender": {
        "men": ("men", "man", "mens", "men's", "male", "gents", "him"),
        "women": ("women", "woman", "womens", "women's", "ladies", "female", "her"),
        "boys": ("boys", "boy", "boy's"),
        "girls": ("girls", "girl", "girl's"),
        "unisex": ("unisex",),
    },
    "extra.season": {
        "summer": ("summer", "summery"),
        "winter": ("winter", "wintry"),
        "fall": ("fall", "autumn"),
        "spring": ("spring",),
    },
    "extra.usage": {
        "casual": ("casual", "everyday"),
        "formal": ("formal", "office", "business"),
        "sports": ("sports", "sport", "gym", "running", "athletic"),
        "ethnic": ("ethnic", "traditional"),
        "party": ("party", "evening"),
    },
    "extra.pattern": {
        "striped": ("striped", "stripes", "stripe", "stripy"),
        "checked": ("checked", "check", "checks", "checkered", "plaid", "tartan"),
        "floral": ("floral", "flowers", "flowery", "flower"),
        "polka": ("polka", "polka dot", "polka dots", "dotted"),
        "printed": ("printed", "print", "graphic"),
        "solid": ("solid", "plain"),
    },
}
FIELDS = tuple(SYNONYMS)
MAX_PHRASE = 3  # words in the longest phrase matched
_WORD = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def fold(text: str) -> str:
    """Lower case, no accents, one space between words, '-' and '_' as spaces."""
    text = unicodedata.normalize("NFKD", str(text))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[-_/]", " ", text).split())


def _singular(phrase: str) -> str:
    words = phrase.split()
    last = words[-1]
    if len(last) > 3 and (last.endswith(("ses", "xes", "zes", "ches", "shes"))):
        last = last[:-2]
    elif len(last) > 3 and last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return " ".join([*words[:-1], last])


def _key(value: str) -> str:
    """What a catalog value and a synonym entry are compared by: 'T-Shirt', 'Tshirts' and
    't-shirt' all give 'tshirt'."""
    return _singular(fold(value)).replace(" ", "")


@dataclass
class Vocabulary:
    """phrase (folded) -> {field: catalog values it names}, for one catalog."""

    phrases: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    def add(self, phrase: str, field_name: str, value: str) -> None:
        self.phrases.setdefault(fold(phrase), {}).setdefault(field_name, set()).add(value)

    @classmethod
    def from_values(cls, values: Mapping[str, Iterable[str]]) -> Vocabulary:
        """From each field's catalog values (`field -> values`)."""
        vocab = cls()
        for name, held in values.items():
            synonyms = SYNONYMS.get(name, {})
            for value in held:
                if value is None or not str(value).strip():
                    continue
                value = str(value)
                folded = fold(value)
                for form in {folded, _singular(folded), folded.replace(" ", ""),
                             _singular(folded).replace(" ", "")}:
                    vocab.add(form, name, value)
                for canonical, words in synonyms.items():
                    if _key(value) == _key(canonical):
                        for word in (canonical, *words):
                            vocab.add(word, name, value)
        return vocab

    def match(self, words: list[str], start: int) -> tuple[int, dict[str, set[str]]] | None:
        """The longest phrase at `start`: (number of words, field -> values)."""
        for n in range(min(MAX_PHRASE, len(words) - start), 0, -1):
            phrase = " ".join(words[start:start + n])
            found = self.phrases.get(phrase) or self.phrases.get(_singular(phrase))
            if found:
                return n, found
        return None


@dataclass
class WordPlan:
    """How a query's words are used: conditions (filter strings) and the text to embed."""

    text: str
    words: list[dict]
    conditions: list[str]

    def to_dict(self) -> dict:
        return {"text": self.text, "words": self.words}


def _quote(value: str) -> str:
    return f'"{value}"' if any(c in value for c in ",;()'") else value


def plan_words(text: str, vocabulary: Vocabulary) -> WordPlan:
    """Split `text` into conditions (words naming values the catalog holds) and meaning."""
    words = _WORD.findall(fold(text).replace("'s", "s"))
    used: list[dict] = []
    by_field: dict[str, set[str]] = {}
    phrase_of: dict[str, list[str]] = {}
    i = 0
    while i < len(words):
        found = vocabulary.match(words, i)
        if found is None:
            used.append({"word": words[i], "used_as": "meaning"})
            i += 1
            continue
        n, fields = found
        phrase = " ".join(words[i:i + n])
        # A phrase naming values in several fields (e.g. 'olive' a colour in one catalog
        # and nothing else) conditions on each field it names.
        for name, values in sorted(fields.items()):
            by_field.setdefault(name, set()).update(values)
            phrase_of.setdefault(name, []).append(phrase)
        used.append({"word": phrase, "used_as": "condition",
                     "fields": {name: sorted(values) for name, values in sorted(fields.items())}})
        i += n
    conditions = []
    for name in sorted(by_field):
        values = sorted(by_field[name])
        conditions.append(f"{name} in ({', '.join(_quote(v) for v in values)})")
    for entry in used:
        if entry["used_as"] == "condition":
            entry["filter"] = "; ".join(c for c in conditions
                                        if c.split(" in ", 1)[0] in entry["fields"])
    return WordPlan(text=text, words=used, conditions=conditions)


def catalog_values(db: sqlite3.Connection, column_sql, fields: Iterable[str] = FIELDS
                   ) -> dict[str, set[str]]:
    """Each field's values in a catalog: the shop's, and the confident predicted labels
    where the catalog keeps predictions (`column_sql(field)`: the SQL reading a field)."""
    values: dict[str, set[str]] = {}
    for name in fields:
        held = {r[0] for r in db.execute(
            f"SELECT DISTINCT {column_sql(name)} FROM items") if r[0] not in (None, "")}
        with contextlib.suppress(sqlite3.OperationalError):  # a catalog without predictions
            held |= {r[0] for r in db.execute(
                "SELECT DISTINCT label FROM predictions WHERE field = ? AND confident = 1",
                (name,)) if r[0]}
        values[name] = {str(v) for v in held}
    return values
