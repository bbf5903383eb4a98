"""The offline provider as a deterministic entailment judge, so that tests and demos of the
`entailment` equivalence strategy know every verdict (and can count every call).

A request whose params carry `offline_judge` is answered with a verdict on the two answers of
the judge prompt (services/variation/judge.py writes it: "Possible Answer 1: ... Possible
Answer 2: ... Does Possible Answer 1 semantically entail Possible Answer 2?"):

    offline_judge: true          # entailment when the two answers match once folded, else neutral
    offline_judge:
      meanings: {Canberra: au, "It is Canberra": au, Sydney: nsw}
      verdicts: [["Canberra", "Canberra, Australia", entailment]]   # premise, hypothesis, reply
      otherwise: neutral

The reply to (premise, hypothesis) is, in this order: the `verdicts` entry for the pair (its
text verbatim, so a test can send "Neutral." or nonsense); else, when both answers have a
meaning, "entailment" if the meanings are equal and "contradiction" if not; else "entailment"
when the folded texts are equal; else `otherwise` ("neutral" by default). Answers are looked up
folded: casefolded, punctuation and symbols dropped, whitespace collapsed.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

JUDGE_PARAM = "offline_judge"

_PROMPT = re.compile(
    r"Possible Answer 1: (?P<premise>.*?)\nPossible Answer 2: (?P<hypothesis>.*)\n"
    r"Does Possible Answer 1 semantically entail Possible Answer 2\?",
    re.DOTALL,
)


def fold(text: str) -> str:
    """What the offline judge compares: casefolded words without punctuation or symbols."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    spaced = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in folded)
    return " ".join(spaced.split())


def check_script(script: Any) -> dict[str, Any]:
    """The script as a dict ({} for `true`), or ValueError saying what is wrong with it."""
    if script is True:
        return {}
    if not isinstance(script, dict):
        raise ValueError(
            f"{JUDGE_PARAM} must be true or a mapping with meanings, verdicts and otherwise "
            f"(got {script!r})"
        )
    unknown = sorted(set(script) - {"meanings", "verdicts", "otherwise"})
    if unknown:
        raise ValueError(
            f"{JUDGE_PARAM}: unknown key(s) {unknown} (use meanings, verdicts, otherwise)"
        )
    meanings = script.get("meanings") or {}
    if not isinstance(meanings, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meanings.items()
    ):
        raise ValueError(f"{JUDGE_PARAM}.meanings must map answers to meaning names")
    verdicts = script.get("verdicts") or []
    if not isinstance(verdicts, list) or not all(
        isinstance(v, list | tuple) and len(v) == 3 and all(isinstance(x, str) for x in v)
        for v in verdicts
    ):
        raise ValueError(
            f"{JUDGE_PARAM}.verdicts must be a list of [premise, hypothesis, reply] triples"
        )
    otherwise = script.get("otherwise", "neutral")
    if not isinstance(otherwise, str) or not otherwise:
        raise ValueError(f"{JUDGE_PARAM}.otherwise must be a reply text (got {otherwise!r})")
    return {"meanings": meanings, "verdicts": verdicts, "otherwise": otherwise}


def judge_reply(script: Any, prompt: str) -> str:
    """The offline judge's reply to a judge prompt (see the module docstring)."""
    rules = check_script(script)
    match = _PROMPT.search(prompt)
    if match is None:
        raise ValueError(
            f"{JUDGE_PARAM}: the prompt is not an entailment question (no 'Possible Answer 1:' "
            "/ 'Possible Answer 2:' lines)"
        )
    premise, hypothesis = fold(match["premise"]), fold(match["hypothesis"])
    for a, b, reply in rules.get("verdicts", []):
        if (fold(a), fold(b)) == (premise, hypothesis):
            return reply
    meanings = {fold(k): v for k, v in rules.get("meanings", {}).items()}
    if premise in meanings and hypothesis in meanings:
        return "entailment" if meanings[premise] == meanings[hypothesis] else "contradiction"
    if premise == hypothesis:
        return "entailment"
    return rules.get("otherwise", "neutral")
