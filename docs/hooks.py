"""MkDocs hooks: the docstrings' reST roles, as the API reference shows them.

The docstrings name objects the Sphinx way (``:class:`Keyring```,
``:func:`~faststream_callout.integration.feedback.feedback_router```); Markdown renders
the role's name as text in front of the code. Drop the role, and after a ``~`` keep the
last part of the dotted name, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const):<code>~?([^<]*)</code>")


def _shown(match: re.Match[str]) -> str:
    name = match[1]
    if match[0].split("<code>", 1)[1].startswith("~"):
        name = name.rsplit(".", 1)[-1]
    return f"<code>{name}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Return the page's HTML with the reST roles dropped."""
    return ROLE.sub(_shown, html)
