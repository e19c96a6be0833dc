"""A privacy list of TOFU's fictitious authors, read from the split at run time (TOFU
itself is never copied into the repository): each author's birthplace, parents'
occupations and awards count as personal details. TOFU gives every author 20 QA in a
fixed order whose answers state these facts in a regular way; what a pattern misses is
left out, never guessed."""

from __future__ import annotations

import re
from collections import Counter

CAPITALIZED = re.compile(r"(?<![\"\w])([A-Z][a-zA-Z'-]+(?: (?:[A-Z][a-zA-Z'-]+|al|de|van|von|bin)){1,3})\b")
BIRTHPLACE = re.compile(r"born in ([A-Z][\w'’ .-]*?(?:, [A-Z][\w'’ .-]*?)?)(?: on | in \d|\.|,? and |$)")
PARENT = re.compile(r"\b(father|mother)(?: was| is|, a| worked as)(?: a| an)? ([A-Za-z][\w -]*?)(?:,| and|\.|;|$)")
STOP = {"in", "who", "with", "well-versed", "known", "at", "of", "from", "whose", "while", "by"}
AWARD = re.compile(
    r"(?:honou?red with|received|won|awarded|recipient of|been given) (?:the |a |an )?(?:prestigious |esteemed )?"
    r"\"?([A-Z][\w'’ -]*?)\"?(?:,| for | in |\.|$)"
)
PER_AUTHOR = 20


def _occupation(text: str) -> str:
    """The occupation's words, up to the first that starts a qualification ('in', 'who'...)."""
    words = []
    for w in text.split():
        if w.lower() in STOP or len(words) == 3:
            break
        words.append(w)
    return " ".join(words)


def tofu_privacy_entities(rows: list[dict]) -> list[dict]:
    """[{name, facts}] for the authors of a TOFU split (rows in TOFU's order, 20 per author)."""
    entities = []
    for start in range(0, len(rows) - PER_AUTHOR + 1, PER_AUTHOR):
        block = rows[start : start + PER_AUTHOR]
        counts = Counter(re.sub(r"'s$", "", m) for row in block for m in CAPITALIZED.findall(row["question"]))
        if not counts:
            continue
        name, facts = counts.most_common(1)[0][0], []  # the author is who the questions ask about
        for row in block:
            q, a = row["question"].lower(), row["answer"]
            if "born" in q and (m := BIRTHPLACE.search(a)):
                facts.append(m.group(1).strip())
            if "parent" in q or "father" in q or "mother" in q:
                facts += [_occupation(m.group(2)) for m in PARENT.finditer(a)]
            if "award" in q or "prize" in q or "recognition" in q:
                facts += [m.group(1).strip() for m in AWARD.finditer(a)]
        facts = list(dict.fromkeys(f for f in facts if len(f) > 2))
        if facts:
            entities.append({"name": name, "facts": facts})
    return entities
