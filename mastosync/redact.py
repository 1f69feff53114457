"""Keep secrets out of everything mastosync prints or writes.

The CLI registers every secret of the configuration once it is loaded; messages that
may carry text from elsewhere (server error bodies, exception strings) pass through
`redact` before they are shown or stored.
"""

from __future__ import annotations

from collections.abc import Iterable

MASK = "***"


class Redactor:
    def __init__(self) -> None:
        self._secrets: list[str] = []

    def add(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({*self._secrets, *(s for s in secrets if s)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


redact = Redactor()
