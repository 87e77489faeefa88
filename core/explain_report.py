"""The pictures of an explanation and the one self-contained HTML page that shows them.

Overlays draw a map over the log-Mel window (the map's colour, with an opacity that grows
with its value, so the spectrogram stays visible where the map is low). The page embeds
every PNG and WAV as a base64 data URI, so it is one file that opens anywhere, offline.
A small inline script checks, once the page has loaded, that every image decoded and
every recording's metadata loaded, and records the result in ``<body data-check=...>``
(``ok images=N audio=M``, or a console error naming what failed), which the test reads
from headless Chromium.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from .reports import _plt


def figure_png(fig, margins=(0.6, 0.15, 0.45, 0.3), dpi: int = 100, **spacing) -> bytes:
    """The PNG bytes of a matplotlib figure, which is closed.

    ``margins`` (left, right, bottom, top, in inches) hold the tick labels, axis labels and
    titles at this module's font sizes; ``spacing`` is ``subplots_adjust``'s hspace and wspace.
    Fixed margins cost one drawing of the figure: a tight layout and a tight bounding box
    each measure every text again, which took 40 % of a figure's time (0.12 against 0.07 s).
    """
    width, height = fig.get_size_inches()
    left, right, bottom, top = margins
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        **spacing)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    _plt().close(fig)
    return buf.getvalue()


def overlay_rgba(saliency: np.ndarray, cmap: str = "jet", max_alpha: float = 0.75, clip: float = 99.0) -> np.ndarray:
    """(frames, mels, 4) colours of a map: negatives clipped, alpha proportional to the shown value.

    Values are divided by the ``clip`` percentile of the positive ones, capped at 1, and
    square-rooted: gradient maps are spiky (IG on the main model: median positive value 5 %
    of its 99th percentile), and on a linear scale all but their peaks would be invisible.
    """
    s = np.maximum(np.asarray(saliency, np.float64), 0.0)
    positive = s[s > 0]
    s = np.sqrt(np.minimum(s / np.percentile(positive, clip), 1.0)) if positive.size else s
    rgba = _plt().get_cmap(cmap)(s)
    rgba[..., 3] = max_alpha * s
    return rgba


def draw_map(ax, x_real: np.ndarray, saliency: np.ndarray | None, hop_seconds: float, start: float, title: str):
    """Draw the log-Mel ``x_real`` (frames, mels) in grey on ``ax``, with ``saliency`` overlaid when given."""
    extent = (start, start + len(x_real) * hop_seconds, 0, x_real.shape[1])
    ax.imshow(x_real.T, origin="lower", aspect="auto", cmap="gray", extent=extent, interpolation="nearest")
    if saliency is not None:
        ax.imshow(overlay_rgba(saliency).transpose(1, 0, 2), origin="lower", aspect="auto", extent=extent,
                  interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("mel band", fontsize=8)
    ax.tick_params(labelsize=7)


def overlay_png(x_real, saliency, hop_seconds: float, start: float, title: str) -> bytes:
    """One map over the log-Mel window, as PNG bytes."""
    fig, ax = _plt().subplots(figsize=(6, 2.4))
    draw_map(ax, x_real, saliency, hop_seconds, start, title)
    return figure_png(fig)


def overview_png(x_real, maps: dict, hop_seconds: float, start: float, title: str) -> bytes:
    """The log-Mel and every map in ``maps`` (name -> map), two panels a row, as PNG bytes."""
    panels = [("log-Mel", None), *maps.items()]
    rows = (len(panels) + 1) // 2
    fig, axes = _plt().subplots(rows, 2, figsize=(9, 2.0 * rows), squeeze=False)
    for ax, (name, saliency) in zip(axes.ravel(), panels):
        draw_map(ax, x_real, saliency, hop_seconds, start, name)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return figure_png(fig, (0.6, 0.15, 0.45, 0.5), hspace=0.55, wspace=0.16)


def curves_png(curves: pd.DataFrame, title: str) -> bytes:
    """Deletion and insertion curves (columns method, curve, fraction, probability), one line per method."""
    fig, axes = _plt().subplots(1, 2, figsize=(9, 3.2), sharey=True)
    for ax, kind in zip(axes, ("deletion", "insertion")):
        for method, part in curves[curves.curve == kind].groupby("method", sort=False):
            ax.plot(part.fraction, part.probability, label=method,
                    linestyle=":" if method == "random" else "-", color="black" if method == "random" else None)
        ax.set_title(f"{kind} (probability of the explained class)", fontsize=9)
        ax.set_xlabel(f"fraction of bins {'removed' if kind == 'deletion' else 'restored'}, most salient first",
                      fontsize=8)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("probability")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return figure_png(fig, (0.6, 0.15, 0.5, 0.55), wspace=0.08)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
figure{display:inline-block;margin:.4em;vertical-align:top}img{max-width:100%}
figcaption{font-size:.85em;color:#555}table{border-collapse:collapse;font-size:.85em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}audio{height:2em;width:16em}"""

_CHECK = """window.addEventListener('load', () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const sounds = [...document.querySelectorAll('audio')].map(a => new Promise(done => {
    if (a.readyState >= 1) return done(a.duration > 0 ? null : a.title);
    a.addEventListener('loadedmetadata', () => done(a.duration > 0 ? null : a.title));
    a.addEventListener('error', () => done(a.title));
    a.load();
  }));
  Promise.all(sounds).then(results => {
    const failed = bad.concat(results.filter(r => r !== null));
    if (failed.length) console.error('explanation page: failed to load ' + failed.join(', '));
    document.body.dataset.check = failed.length ? 'failed ' + failed.join(', ') :
      `ok images=${document.images.length} audio=${results.length}`;
  });
});"""


def render_page(title: str, facts: list[str], figures: list[tuple[str, bytes]],
                sounds: list[tuple[str, list[tuple[str, bytes]]]], table: pd.DataFrame, notes: list[str]) -> str:
    """The whole HTML page: facts, figures (caption, PNG), sound rows (label, [(column, WAV)]), the table, notes."""
    e = html.escape
    figure_html = "\n".join(f'<figure><img src="{data_uri(png, "image/png")}" alt="{e(caption)}">'
                            f"<figcaption>{e(caption)}</figcaption></figure>" for caption, png in figures)
    columns = list(dict.fromkeys(column for _, row in sounds for column, _ in row))
    sound_rows = "\n".join(
        f"<tr><td>{e(label)}</td>" + "".join(
            f'<td><audio controls preload="metadata" title="{e(label)} {e(column)}" '
            f'src="{data_uri(dict(row)[column], "audio/wav")}"></audio></td>' if column in dict(row) else "<td></td>"
            for column in columns) + "</tr>" for label, row in sounds)
    header = "".join(f"<th>{e(c)}</th>" for c in ["", *columns])
    maps = f"<h2>Maps over the log-Mel window</h2>\n{figure_html}" if figures else ""
    listen = (f"<h2>Listen: the spectrogram under each mask, resynthesised with the original phase</h2>\n"
              f"<table><tr>{header}</tr>\n{sound_rows}\n</table>") if sounds else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{e(title)}</h1>
<ul>{''.join(f'<li>{e(f)}</li>' for f in facts)}</ul>
{maps}
{listen}
<h2>Metrics</h2>
{table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0)}
<ul>{''.join(f'<li>{e(n)}</li>' for n in notes)}</ul>
<script>{_CHECK}</script>
</body></html>
"""
