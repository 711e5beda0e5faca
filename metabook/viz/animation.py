"""JS-playable matplotlib animations that work offline, in the built book and in Jupyter."""
from __future__ import annotations

import re
from typing import Any

__all__ = ["animation_html"]

# Text glyphs for the player's buttons, used wherever no icon font is loaded.
_GLYPHS = {"minus": "\\2212", "fast-backward": "\\21E4", "step-backward": "\\2039", "play": "\\25B6",
           "pause": "\\275A\\275A", "step-forward": "\\203A", "fast-forward": "\\21E5", "plus": "+"}


def animation_html(anim: Any, default_mode: str = "once") -> str:
    """HTML of ``anim.to_jshtml()`` without its CDN stylesheet.

    matplotlib's player links Font Awesome 4 from a CDN for its button icons; that
    request fails offline.  The link is dropped and CSS text glyphs stand in for
    the icons.  Display the result with ``IPython.display.HTML``.
    """
    html = anim.to_jshtml(default_mode=default_mode)
    html = re.sub(r"<link[^>]*font-awesome[^>]*>", "", html)
    css = "".join(f".mb-anim .anim-buttons i.fa-{name}::before{{content:'{glyph}';font-style:normal}}"
                  for name, glyph in _GLYPHS.items())
    return f"<style>{css}</style><div class='mb-anim'>{html}</div>"
