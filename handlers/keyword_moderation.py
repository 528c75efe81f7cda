"""Keyword moderation: refuse a request whose text matches a block rule that no allow rule covers.

Options (`extproc.handlers."handlers.keyword_moderation".options`):
- `block`: rules; a rule is a word or phrase (whole words; any whitespace between a phrase's words) or a
  `/regular expression/`.
- `allow`: rules of the same form; a block match inside an allow match does not count, so allowing
  "kill process" while blocking "kill" lets "how do I kill process 42?" through but not "kill them".
- `models`: `{model: {block: [...], allow: [...]}}`: rules added to the defaults for requests to that model.
- `case_sensitive`: `false` (default): rules match regardless of case.
- `status_code`: the refusal's status (default 400).

It is a moderation hook: it runs beside the upstream call (which is billed anyway), on every text place
`extproc.request_texts` yields (messages of every role, their names, tool calls and arguments, tool
definitions, prompts and inputs), each read as `extproc.TextScan` normalises it (format characters such
as zero-width spaces removed, then NFKC: fullwidth letters read as ASCII). Each place is matched on its
own: no phrase or allow rule spans two places, and `^`/`$` in a /regex/ match at each line's start and
end. A refusal names the rule that matched, never the user's text:
`{"error": "Violated content policy", "category": "keyword", "match": <rule>}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from extproc import CustomLogger, HTTPException, TextScan, UserAPIKeyAuth, normalize_text, request_texts


def _compile(rule: Any, where: str, flags: int) -> tuple[str, re.Pattern[str]]:
    if not isinstance(rule, str) or not rule.strip():
        raise ValueError(f"{where}: expected a word, a phrase or a /regex/, not {rule!r}")
    if len(rule) > 2 and rule.startswith("/") and rule.endswith("/"):
        source = rule[1:-1]
    else:
        words = normalize_text(rule).split()  # read as the text is
        if not words:
            raise ValueError(f"{where}: {rule!r} has nothing but format characters")
        # "(?<!\w)word" written as "word(?<!\w.{n})": starting with a literal lets the engine skip
        # through the text to candidates (two to three times faster on prose)
        first = re.escape(words[0]) + rf"(?<!\w.{{{len(words[0])}}})"
        source = r"\s+".join([first, *(re.escape(word) for word in words[1:])]) + r"(?!\w)"
    try:
        pattern = re.compile(source, flags)
    except re.error as exc:
        raise ValueError(f"{where}: {rule!r} is not a valid regular expression: {exc}") from None
    if pattern.fullmatch(""):
        raise ValueError(f"{where}: {rule!r} matches the empty text")
    return rule, pattern


def _rules(value: Any, where: str, flags: int) -> tuple[tuple[str, re.Pattern[str]], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list of words or /regex/ rules, not {value!r}")
    return tuple(_compile(rule, f"{where}[{i}]", flags) for i, rule in enumerate(value))


@dataclass(frozen=True, slots=True)
class _Policy:
    block: tuple[tuple[str, re.Pattern[str]], ...]
    allow: tuple[tuple[str, re.Pattern[str]], ...]

    def violation(self, text: str) -> str | None:
        """The first block rule matching outside every allow match."""
        allowed = [match.span() for _, pattern in self.allow for match in pattern.finditer(text)]
        for rule, pattern in self.block:
            for match in pattern.finditer(text):
                start, end = match.span()
                if end > start and not any(a <= start and end <= b for a, b in allowed):
                    return rule
        return None


class Handler(CustomLogger):
    """Keyword and regex policy, per model if asked, as a moderation hook."""

    def __init__(
        self,
        block: list[str] | None = None,
        allow: list[str] | None = None,
        models: Mapping[str, Mapping[str, list[str]]] | None = None,
        case_sensitive: bool = False,
        status_code: int = 400,
    ) -> None:
        super().__init__()
        if not isinstance(case_sensitive, bool):
            raise ValueError(f"case_sensitive: expected true or false, not {case_sensitive!r}")
        if isinstance(status_code, bool) or not isinstance(status_code, int) or not 400 <= status_code <= 599:
            raise ValueError(f"status_code: expected an HTTP error status (400-599), not {status_code!r}")
        # MULTILINE: places are joined by lines (extproc.SEPARATOR), so ^ and $ keep meaning a place's edges
        flags = re.MULTILINE | (0 if case_sensitive else re.IGNORECASE)
        self.status_code = status_code
        self.default = _Policy(_rules(block, "block", flags), _rules(allow, "allow", flags))
        self.models: dict[str, _Policy] = {}
        if models is not None and not isinstance(models, Mapping):
            raise ValueError(f"models: expected a mapping of model name to {{block, allow}}, not {models!r}")
        for name, policy in (models or {}).items():
            where = f"models.{name}"
            if not isinstance(policy, Mapping) or policy.keys() - {"block", "allow"}:
                raise ValueError(f"{where}: expected a mapping with only 'block' and 'allow', not {policy!r}")
            self.models[str(name)] = _Policy(
                self.default.block + _rules(policy.get("block"), f"{where}.block", flags),
                self.default.allow + _rules(policy.get("allow"), f"{where}.allow", flags),
            )
        if not self.default.block and not any(policy.block for policy in self.models.values()):
            raise ValueError("block: no rules (give `block` or `models.<model>.block`)")

    async def async_moderation_hook(
        self, data: dict[str, Any], user_api_key_dict: UserAPIKeyAuth, call_type: str
    ) -> None:
        model = data.get("model")
        policy = self.models.get(model, self.default) if isinstance(model, str) else self.default
        rule = policy.violation(TextScan(request_texts(data, call_type)).text)
        if rule is not None:
            detail = {"error": "Violated content policy", "category": "keyword", "match": rule}
            raise HTTPException(status_code=self.status_code, detail=detail)
