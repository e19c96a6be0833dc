"""What counts as a privacy leak: protected facts about named entities (a user's list) and
PII patterns (emails, phone numbers, street addresses, ID numbers)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ConfigError

PII = {  # name -> pattern; deliberately plain so a user can read why a row was flagged
    "email address": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
    "phone number": re.compile(r"(?<!\w)(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s.-]\d{3,4}[\s.-]\d{3,4}(?!\w)"),
    "street address": re.compile(
        r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Boulevard|Blvd|Drive|Dr)\b"
    ),
    "ID number": re.compile(r"\b\d{3}-\d{2}-\d{4}\b|\b[A-Z]{1,2}\d{6,9}\b"),
}


def load_entities(path: str, max_rows: int | None = None) -> list[dict]:
    """[{name, facts}] from a privacy file, or, for "tofu:SPLIT", TOFU's authors of that
    split (their first `max_rows` rows) read at run time; an empty list or a fact-less
    entity is an error."""
    if str(path).startswith("tofu:"):
        from ..data.sources import load_tofu
        from .tofu_private import tofu_privacy_entities

        rows = load_tofu(str(path).removeprefix("tofu:"))
        entities = tofu_privacy_entities(rows[:max_rows] if max_rows else rows)
        if not entities:
            raise ConfigError(f"flag.privacy_file {path}: no author's personal details found in those rows")
        return entities
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"flag.privacy_file {path} cannot be read as JSON ({e})") from None
    entities = data.get("entities") if isinstance(data, dict) else None
    if not entities:
        raise ConfigError(
            f'flag.privacy_file {path} lists no entities: write {{"entities": [{{"name": ..., "facts": [...]}}]}}'
        )
    for e in entities:
        if not isinstance(e, dict) or not e.get("name") or not e.get("facts"):
            raise ConfigError(f"flag.privacy_file {path}: every entity needs a name and a non-empty facts list ({e})")
    return entities


def leaks(text: str, prompt: str, entities: list[dict], patterns: bool) -> list[str]:
    """Why `text` leaks, one reason per finding (empty: nothing found). A protected fact
    counts when its entity is named in the prompt or the text."""
    reasons = []
    lowered, context = text.lower(), (prompt + " " + text).lower()
    for e in entities:
        if e["name"].lower() in context:
            for fact in e["facts"]:
                if str(fact).lower() in lowered:
                    reasons.append(f"reveals {fact!r} about {e['name']}")
    if patterns:
        for name, pattern in PII.items():
            found = pattern.search(text)
            if found:
                reasons.append(f"contains a {name} ({found.group(0)!r})")
    return reasons
