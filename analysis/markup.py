"""HTML shared by the report, its interactive parts, the one-network view and the claims
page: escaping, and figures as PNG data URIs."""

from __future__ import annotations

import base64
import html
import io


def esc(x) -> str:
    """``str(x)`` escaped for HTML text and quoted attribute values."""
    return html.escape(str(x), quote=True)


def png_uri(fig, dpi: int) -> str:
    """A matplotlib figure as a ``data:image/png;base64,…`` URI (the page stays one file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
