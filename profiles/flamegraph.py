"""A flame graph SVG of py-spy samples, coloured by part.

Each box is a frame; its width is the time of the samples whose stacks pass through
it, the callers below and the callees above. A box takes the colour of the part its
time is attributed to (profiles.attribution: the outermost matching frame at or
below it), grey where no part claims it. Hovering a box shows its name, file,
seconds and share. No script: the file opens in any browser.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from profiles.attribution import classify
from profiles.pyspy import Samples

COLOURS = {
    "basis": "#e4572e", "matmul": "#4c78a8", "autograd": "#9467bd", "optimizer": "#54a24b",
    "transfer": "#f2b701", "python": "#bab0ac", "other": "#bab0ac",
}
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
    boxes: list[tuple[float, int, float, int, str | None, float]] = []  # x, depth, width, frame, part, s

    def place(level: dict, x: float, depth: int, inherited: str | None) -> None:
        for i, (seconds, children) in sorted(level.items(), key=lambda kv: -kv[1][0]):
            width = seconds / total * WIDTH
            part = inherited or parts[i]
            if width >= 0.3:
                boxes.append((x, depth, width, i, part, seconds))
                place(children, x, depth + 1, part)
            x += width

    place(_tree(samples), 0.0, 0, None)
    depth = max((b[1] for b in boxes), default=0) + 1
    height = (depth + 2) * ROW
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        f'<text x="4" y="{ROW - 4}" font-size="{FONT + 2}">{escape(title)} '
        f'({total:.2f} s sampled; colour = part)</text>',
    ]
    for x, d, width, i, part, seconds in boxes:
        name, file = samples.frames[i]
        y = height - (d + 1) * ROW
        colour = COLOURS.get(part or "", "#dddddd")
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
