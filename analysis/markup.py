"""HTML text shared by the report, its interactive parts, the one-network view and the claims page."""

from __future__ import annotations

import html


def esc(x) -> str:
    """``str(x)`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(x), quote=True)
