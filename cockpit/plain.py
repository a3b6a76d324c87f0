"""A quarantined document as a lead reads it: ObjectId 5f8a…, dates as
dates, no {"$oid": …} wrappers or JSON punctuation."""

from __future__ import annotations

import json
import re

WRAPPERS = {"$oid": "ObjectId {}", "$numberLong": "{}", "$numberInt": "{}",
            "$numberDouble": "{}", "$numberDecimal": "{}", "$uuid": "UUID {}",
            "$symbol": "{}"}


def plain_value(value: object) -> str | None:
    """The one-line form of an extended-JSON wrapper, else None."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (key, inner), = value.items()
    if key in WRAPPERS and not isinstance(inner, dict | list):
        return WRAPPERS[key].format(inner)
    if key == "$date":
        if isinstance(inner, dict):  # {"$numberLong": "…"}: milliseconds since 1970
            inner = plain_value(inner)
        return str(inner).replace("T", " ").replace("Z", " UTC")
    if key == "$binary" and isinstance(inner, dict):
        return f"binary ({len(str(inner.get('base64', '')))} base64 characters)"
    return None


def plain_lines(value: object, indent: str = "") -> list[str]:
    """YAML-like lines: `key: value`, lists as `- item`."""
    simple = plain_value(value)
    if simple is not None:
        return [indent + simple]
    if isinstance(value, dict):
        if not value:
            return [indent + "(empty)"]
        out = []
        for k, v in value.items():
            one = _one_line(v)
            if one is not None:
                out.append(f"{indent}{k}: {one}")
            else:
                out.append(f"{indent}{k}:")
                out += plain_lines(v, indent + "  ")
        return out
    if isinstance(value, list):
        if not value:
            return [indent + "(empty list)"]
        out = []
        for v in value:
            one = _one_line(v)
            if one is not None:
                out.append(f"{indent}- {one}")
            else:
                out.append(f"{indent}-")
                out += plain_lines(v, indent + "  ")
        return out
    return [indent + (_one_line(value) or "")]


def _one_line(value: object) -> str | None:
    if (simple := plain_value(value)) is not None:
        return simple
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quoted: "" and " x" stay visible
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list) and not value:
        return "(empty)" if isinstance(value, dict) else "(empty list)"
    return None


def plain_document(text: str) -> str:
    """Extended JSON text in plain lines; text that is not JSON as it is
    (a document cut for display)."""
    try:
        return "\n".join(plain_lines(json.loads(text)))
    except ValueError:
        return text


# Emoji many terminal fonts lack (drawn as boxes): those that carry a meaning
# become words; the decorative ones go, the text beside them says it all.
EMOJI_WORDS = {"✅": "PASS:", "❌": "FAIL:", "⚠️": "WARNING:", "⚠": "WARNING:"}
PICTOGRAPHS = re.compile("[\U0001F000-\U0001FAFF\u2702\u2139\u23E9-\u23FA\uFE0F\u200D]+ {0,2}")


def without_emoji(text: str) -> str:
    for emoji, word in EMOJI_WORDS.items():
        text = text.replace(emoji, word)
    return PICTOGRAPHS.sub("", text)
