"""Which language a chat message is in: its script first, then its common words."""

from __future__ import annotations

import re

from .lexicon import detection_words, fold, language_names

__all__ = ["detect_language"]

_SCRIPTS = [
    ("Cyrillic", 0x0400, 0x04FF), ("Greek", 0x0370, 0x03FF), ("Arabic", 0x0600, 0x06FF), ("Hebrew", 0x0590, 0x05FF),
    ("Devanagari", 0x0900, 0x097F), ("Thai", 0x0E00, 0x0E7F), ("Hangul", 0xAC00, 0xD7AF), ("Japanese kana", 0x3040, 0x30FF),
    ("CJK", 0x4E00, 0x9FFF),
]  # fmt: skip


def detect_language(text: str) -> tuple[str, str]:
    """(code, name): ``("en", "English")`` or a guess such as ``("es", "Spanish")``,
    ``("script:Cyrillic", "Cyrillic script")``. Cheap and conservative: English unless the
    message is mostly another script or has clearly more common words of another language
    (the word lists are ``stop_words`` in ``lexicon/<code>.json``)."""
    letters = [c for c in text if c.isalpha()]
    if letters:
        for name, lo, hi in _SCRIPTS:
            share = sum(lo <= ord(c) <= hi for c in letters) / len(letters)
            if share > 0.3:
                return f"script:{name}", f"{name} script"
        non_latin = sum(ord(c) > 0x24F for c in letters) / len(letters)
        if non_latin > 0.3:
            return "script:other", "a non-Latin script"
    stop = detection_words()
    found = re.findall(r"[^\W\d_]+", fold(text))
    en = sum(_typical(w, stop["en"]) for w in found)
    best, best_n = "en", 0
    for lang, common in stop.items():
        if lang == "en":
            continue
        # words shared with English ("film", "no") say nothing about the language
        n = sum(_typical(w, common) and not _typical(w, stop["en"]) for w in found)
        if n > best_n:
            best, best_n = lang, n
    if best_n >= 2 and best_n > en:
        return best, language_names()[best]
    return "en", "English"


def _typical(word: str, common: frozenset[str]) -> bool:
    """``word`` is in ``common``, or starts with one of its stems ("horror*" → "horrorfilme")."""
    return word in common or any(word.startswith(w[:-1]) for w in common if w.endswith("*") and len(word) >= len(w) - 1)
