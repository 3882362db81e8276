"""Writing the glossary site into a static build (`digest build`), as Pelican writes its pages:
`glossary/index.html` and `glossary/<slug>/index.html`, the same bytes `digest serve` answers.

A term gone from the glossary takes its page with it, so a static site 404s where the served one
does; a page whose bytes did not change is left as it is, so its file date and a sync tool's
comparison stay quiet.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from digest.config import GLOSSARY_PATH, Settings
from digest.core.glossary_pages import render_site
from digest.model.glossary import Glossary

__all__ = ["write_atomic", "write_glossary_site"]

_PAGE = "index.html"


def write_glossary_site(out_dir: Path, settings: Settings, glossary: Glossary) -> list[Path]:
    """Write every glossary page under `out_dir`; return their paths (index first)."""
    out_dir = Path(out_dir)
    pages = render_site(settings, glossary)
    written: list[Path] = []
    for name, html in pages.items():
        path = out_dir / name
        _write_if_changed(path, html.encode("utf-8"))
        written.append(path)
    _remove_gone_terms(out_dir / GLOSSARY_PATH.strip("/"), set(glossary.slugs))
    return written


def _remove_gone_terms(folder: Path, slugs: set[str]) -> None:
    """Remove the page folder of each term no longer in the glossary: only a folder holding
    nothing but its `index.html`, so no file someone put there by hand is ever lost."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name in slugs or entry.is_symlink() or not entry.is_dir():
            continue
        if [child.name for child in entry.iterdir()] == [_PAGE]:
            shutil.rmtree(entry)


def _write_if_changed(path: Path, data: bytes) -> None:
    """`write_atomic`, unless `path` holds those bytes already (a rebuild touches no page that
    did not change)."""
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            return
    except OSError:
        pass  # unreadable: written afresh below
    write_atomic(path, data)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically, so a web server reading the folder never sees
    half a file; public (0644), as every file a build writes is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are public files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
