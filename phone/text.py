"""Text folding for Japanese search: ｶﾅ, カナ and かな find the same contact."""

import unicodedata

_HIRAGANA_START, _HIRAGANA_END = 0x3041, 0x3096
_KATAKANA_OFFSET = 0x60


def to_katakana(value: str) -> str:
    """NFKC (half-width ｶﾅ → カナ, full-width ＡＢＣ → ABC) and hiragana → katakana."""
    folded = unicodedata.normalize("NFKC", value or "")
    return "".join(
        chr(ord(ch) + _KATAKANA_OFFSET) if _HIRAGANA_START <= ord(ch) <= _HIRAGANA_END else ch
        for ch in folded
    )


def kana_for_search(value: str) -> str:
    """A kana reading as stored: full-width katakana, trimmed.  Models apply it on save, so that a
    reading typed in hiragana or half-width kana (by a user, an admin or an import) is found by
    any of the three."""
    return to_katakana(value).strip()


def search_terms(query: str) -> tuple[str, str, str]:
    """(text as typed but folded, katakana form, digits) of a search box entry."""
    from phone.numbers import normalize_number

    text = unicodedata.normalize("NFKC", query or "").strip()
    digits = normalize_number(text) if any(ch.isdigit() for ch in text) else ""
    return text, to_katakana(text), digits
