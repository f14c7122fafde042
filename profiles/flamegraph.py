"""A flame graph SVG of py-spy samples, coloured by part.

Each box is a frame; its width is the time of the samples whose stacks pass through
it, the callers below and the callees above. A box takes the colour of the part its
time is attributed to (profiles.attribution: the outermost matching frame at or
below it; inside the backward, the gradient the innermost node frame at or below it
names), grey where no part claims it. The colours are the report's
(``benchmarks.core.schema.PART_COLOURS``), and a key under the title names the parts
the graph shows. Hovering a box shows its name, file, seconds and share. No script:
the file opens in any browser.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from benchmarks.core.schema import PART_COLOURS, PARTS
from profiles.attribution import classify, classify_gradient, resolve
from profiles.pyspy import Samples

UNCLAIMED = "#dddddd"  # a frame no part claims (the stacks below the measured step's parts)
WIDTH, ROW, FONT = 1200, 17, 11


def _tree(samples: Samples) -> dict:
    """{frame index: [seconds, children]} from the root frames up."""
    root: dict = {}
    for stack, weight in zip(samples.stacks, samples.weights):
        level = root
        for i in stack:
            node = level.setdefault(i, [0.0, {}])
            node[0] += weight
            level = node[1]
    return root


def write(samples: Samples, path: Path, title: str) -> Path:
    """Draw ``samples`` as a flame graph into ``path`` (SVG)."""
    total = samples.seconds or 1.0
    parts = [classify(name, file) for name, file in samples.frames]
    gradients = [classify_gradient(name, file) for name, file in samples.frames]
    boxes: list[tuple[float, int, float, int, str | None, float]] = []  # x, depth, width, frame, part, s

    def place(level: dict, x: float, depth: int, outer: str | None, gradient: str | None) -> None:
        for i, (seconds, children) in sorted(level.items(), key=lambda kv: -kv[1][0]):
            width = seconds / total * WIDTH
            part, grad = outer or parts[i], gradients[i] or gradient
            if width >= 0.3:
                boxes.append((x, depth, width, i, resolve(part, grad), seconds))
                place(children, x, depth + 1, part, grad)
            x += width

    place(_tree(samples), 0.0, 0, None, None)
    depth = max((b[1] for b in boxes), default=0) + 1
    height = (depth + 3) * ROW
    shown = [p for p in PARTS if any(b[4] == p for b in boxes)]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<text x="4" y="{ROW - 4}" font-size="{FONT + 2}">{escape(title)} '
        f'({total:.2f} s sampled; colour = part)</text>',
        _key(shown + (["no part"] if any(b[4] is None for b in boxes) else []), y=ROW + 2),
    ]
    for x, d, width, i, part, seconds in boxes:
        name, file = samples.frames[i]
        y = height - (d + 1) * ROW
        colour = PART_COLOURS.get(part or "", UNCLAIMED)
        label = name if len(name) * FONT * 0.6 < width - 4 else name[: max(0, int((width - 4) / (FONT * 0.6)) - 2)] + ".."
        tip = f"{name} ({file})" if file else name
        out.append(
            f'<g><title>{escape(tip)}: {seconds:.3f} s, {seconds / total:.1%}'
            f'{f"; {part}" if part else ""}</title>'
            f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW - 1}" fill="{colour}"/>'
            + (f'<text x="{x + 2:.1f}" y="{y + ROW - 5}">{escape(label)}</text>' if width > 24 else "")
            + "</g>"
        )
    out.append("</svg>")
    path.write_text("\n".join(out))
    return path


def _key(parts: list[str], y: float) -> str:
    """One row naming each part's colour: a swatch, then the part's name."""
    items, x = [], 4.0
    for part in parts:
        colour = PART_COLOURS.get(part, UNCLAIMED)
        items.append(f'<rect x="{x:.0f}" y="{y}" width="{ROW - 5}" height="{ROW - 5}" fill="{colour}"/>'
                     f'<text x="{x + ROW:.0f}" y="{y + ROW - 6}">{escape(part)}</text>')
        x += ROW + len(part) * FONT * 0.6 + 14
    return f'<g class="key"><title>colour = part</title>{"".join(items)}</g>'
