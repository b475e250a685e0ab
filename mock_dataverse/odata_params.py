"""OData parameter aliases: `$filter=sdkmessageid/name eq @message&@message='CreateMultiple'` (PA
`webapi/query/overview.md`: "parameter aliases work in $filter and $orderby")."""

from __future__ import annotations

import re

from .errors import bad_request

ALIAS_RE = re.compile(r"@[A-Za-z_][A-Za-z0-9_]*")


def substitute_aliases(text: str | None, query: dict[str, str]) -> str | None:
    """`text` with each `@name` outside string literals replaced by the query's `@name` value; 400 naming
    an alias that the query does not define."""
    if not text or "@" not in text:
        return text
    out: list[str] = []
    i, quoted = 0, False
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        if not quoted and ch == "@":
            m = ALIAS_RE.match(text, i)
            if m:
                name = m.group(0)
                if name not in query:
                    raise bad_request(f"The parameter alias '{name}' is used in the query but not defined.")
                out.append(query[name])
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return "".join(out)
