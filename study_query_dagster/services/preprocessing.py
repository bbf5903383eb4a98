"""`PromptPreprocessor`: clean a prompt before it is sent.

Each step is a static method usable on its own; an instance is a pipeline (the steps it is
configured with, in a fixed order) that also reports which steps changed the text, so the
capture can keep both the original and the sent prompt.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_LENGTH = 10_000

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# Phone-like: optional +country code, optional (area), then 2-5 digit groups joined by space,
# dot or dash, or one unbroken run; kept only when it has 7-15 digits (see _phone).
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?"
    r"(?:\d{2,5}(?:[\s.-]\d{2,5}){1,4}|\d{7,15})(?![\w-])"
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines
_BLANK_LINES = re.compile(r"\n{3,}")


def _phone(match: re.Match) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    plain_number = text.isdigit() and not text.startswith("0") and len(text) < 10
    if not 7 <= digits <= 15 or _ISO_DATE.fullmatch(text) or plain_number:
        return text
    return "[PHONE]"


@dataclass
class PromptPreprocessor:
    """A pipeline: strip_control_chars -> clean_whitespace -> remove_pii -> truncate."""

    strip_control_chars_enabled: bool = True
    clean_whitespace_enabled: bool = True
    remove_pii_enabled: bool = True
    max_length: int | None = DEFAULT_MAX_LENGTH

    # --- the steps --------------------------------------------------------------------------

    @staticmethod
    def strip_control_chars(text: str) -> str:
        """Drop control characters (keeping newlines and tabs); CRLF and CR become LF."""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        return "".join(
            c for c in text if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cs")
        )

    @staticmethod
    def clean_whitespace(text: str) -> str:
        """Collapse runs of spaces/tabs, trim each line, keep at most one blank line, strip.
        Line structure survives: prompts with lists or code stay readable."""
        lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()

    @staticmethod
    def remove_pii(text: str) -> str:
        """Replace e-mail addresses with [EMAIL] and phone numbers with [PHONE]."""
        return _PHONE.sub(_phone, _EMAIL.sub("[EMAIL]", text))

    @staticmethod
    def truncate(text: str, max_length: int = DEFAULT_MAX_LENGTH) -> str:
        """At most `max_length` characters."""
        if max_length <= 0:
            raise ValueError(f"max_length must be positive (got {max_length})")
        return text[:max_length]

    @staticmethod
    def apply_template(template: str, **variables: Any) -> str:
        """Fill `{name}` placeholders with str.format semantics (`{{` and `}}` are literal
        braces). A placeholder without a value raises ValueError naming it."""
        needed: list[str] = []
        try:
            for _, field, _, _ in string.Formatter().parse(template):
                if field is None:
                    continue
                root = re.split(r"[.\[]", field, maxsplit=1)[0]
                if not root or root.isdigit():
                    raise ValueError(
                        f"template placeholder {{{field}}} must be named, e.g. {{question}}"
                    )
                needed.append(root)
        except ValueError as exc:
            if "placeholder" in str(exc):
                raise
            raise ValueError(f"malformed template: {exc}") from exc
        missing = sorted({n for n in needed if n not in variables})
        if missing:
            raise ValueError(f"template variable(s) missing: {', '.join(missing)}")
        try:
            return template.format(**variables)
        except (KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"template placeholder could not be filled: {exc}") from exc

    # --- the pipeline ------------------------------------------------------------------------

    def process(self, text: str) -> tuple[str, list[str]]:
        """The cleaned text and the names of the steps that changed it."""
        steps = [
            ("strip_control_chars", self.strip_control_chars_enabled, self.strip_control_chars),
            ("clean_whitespace", self.clean_whitespace_enabled, self.clean_whitespace),
            ("remove_pii", self.remove_pii_enabled, self.remove_pii),
        ]
        changed: list[str] = []
        for name, enabled, step in steps:
            if enabled:
                new = step(text)
                if new != text:
                    changed.append(name)
                text = new
        if self.max_length is not None and len(text) > self.max_length:
            text = self.truncate(text, self.max_length)
            changed.append("truncate")
        return text, changed

    @property
    def steps(self) -> list[str]:
        enabled = [
            ("strip_control_chars", self.strip_control_chars_enabled),
            ("clean_whitespace", self.clean_whitespace_enabled),
            ("remove_pii", self.remove_pii_enabled),
            ("truncate", self.max_length is not None),
        ]
        return [name for name, on in enabled if on]
