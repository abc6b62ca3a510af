"""``gradgen explain --format html``: the Markdown explanation as one standalone page.

Nothing is loaded from anywhere when the page opens (its Content-Security-Policy forbids it):

- formulas are converted at build time from their LaTeX to MathML (``latex2mathml``), which current
  browsers typeset natively, so no math script (KaTeX is ~280 kB of script plus fonts) is embedded;
- the graph is laid out here and drawn as inline SVG (the Markdown's Mermaid diagram would need the
  ~3 MB Mermaid bundle in every page).

``markdown_to_html`` handles exactly the Markdown that ``gradgen/explain.py`` writes: headings,
paragraphs, lists, tables, fenced and indented code, ``$$`` display and ``$`` inline math, inline code,
bold and ``<details>`` blocks.
"""

from __future__ import annotations

import html
import re

from gradgen.explain import GraphModel

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem 2rem 4rem; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { margin-top: 1.8rem; font-size: 1.1rem; }
code, pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", monospace; }
code { background: #f3f3f3; padding: 0 .2em; border-radius: 3px; }
pre { background: #f6f8fa; padding: .6rem .8rem; overflow-x: auto; border-radius: 4px; }
pre code { background: none; padding: 0; }
table { border-collapse: collapse; margin: .8rem 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
math[display="block"] { margin: .6rem 0; font-size: 1.1em; }
details { margin: .4rem 0 1rem; } summary { cursor: pointer; color: #444; }
figure.graph { overflow-x: auto; margin: 1rem 0; }
"""

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _math(tex: str, display: bool) -> str:
    from latex2mathml.converter import convert

    return convert(tex, display="block" if display else "inline")


_INLINE = re.compile(r"(\$[^$]+\$|`[^`]+`|\*\*[^*]+\*\*)")


def inline(text: str) -> str:
    out = []
    for part in _INLINE.split(text):
        if not part:
            continue
        if part.startswith("$") and part.endswith("$") and len(part) > 2:
            out.append(_math(part[1:-1], False))
        elif part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        elif part.startswith("**") and part.endswith("**") and len(part) > 4:
            out.append(f"<strong>{html.escape(part[2:-2])}</strong>")
        else:
            out.append(html.escape(part.replace("&#124;", "|")))
    return "".join(out)


def _cells(row: str) -> list[str]:
    # the Markdown escapes | inside cells as &#124;, so splitting on | is safe
    return [c.strip() for c in row.strip().strip("|").split("|")]


def markdown_to_html(md: str, graph_svg: str) -> str:
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            lang = line[3:].strip()
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            body = "\n".join(lines[i + 1 : j])
            if lang == "mermaid":
                out.append(f'<figure class="graph">{graph_svg}</figure>')
            else:
                out.append(f"<pre><code>{html.escape(body)}</code></pre>")
            i = j + 1
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
            i += 1
        elif line.startswith("$$") and line.endswith("$$"):
            out.append(_math(line[2:-2], True))
            i += 1
        elif line.startswith("<details><summary>"):
            summary = line[len("<details><summary>") : -len("</summary>")]
            out.append(f"<details><summary>{inline(summary)}</summary>")
            i += 1
        elif line.startswith("</details>"):
            out.append("</details>")
            i += 1
        elif line.startswith("    "):
            j = i
            while j < len(lines) and lines[j].startswith("    "):
                j += 1
            out.append("<pre>" + html.escape("\n".join(x[4:] for x in lines[i:j])) + "</pre>")
            i = j
        elif line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            head, rows = _cells(lines[i]), [_cells(r) for r in lines[i + 2 : j]]
            table = [
                "<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
            ]
            table += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in rows]
            out.append("\n".join(table) + "</tbody></table>")
            i = j
        elif line.startswith("- "):
            items = []
            while i < len(lines) and (lines[i].startswith("- ") or lines[i].startswith("  ")):
                if lines[i].startswith("- "):
                    items.append(lines[i][2:])
                else:
                    items[-1] += " " + lines[i].strip()
                i += 1
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in items) + "</ul>")
        else:
            j = i
            while j < len(lines) and lines[j].strip() and not _starts_block(lines[j]):
                j += 1
            out.append(f"<p>{inline(' '.join(lines[i:j]))}</p>")
            i = j
    return "\n".join(out)


def _starts_block(line: str) -> bool:
    return line.startswith(("#", "```", "$$", "|", "- ", "<details>", "</details>", "    "))


# --------------------------------------------------------------------------------------------------
# the graph as SVG

CHAR_W, NODE_H, GAP_X, GAP_Y, PAD = 7.4, 44, 70, 22, 16
FILL = {"input": "#f2f3f4", "wrt": "#fdebd0", "entry": "#ffffff", "output": "#d6eaf8"}
STROKE = {"input": "#7f8c8d", "wrt": "#c0392b", "entry": "#555555", "output": "#2471a3"}


def graph_svg(model: GraphModel) -> str:
    """A layered left-to-right drawing: inputs first, each entry one column after what it reads."""
    deps: dict[str, list[str]] = {}
    for a, b in model.edges:
        deps.setdefault(b, []).append(a)
    layer: dict[str, int] = {}
    for nid, _, _, _ in model.nodes:  # nodes come in dependency order
        layer[nid] = 1 + max((layer[x] for x in deps.get(nid, []) if x in layer), default=-1)
    # an input sits in the column just before its first reader, not all of them at the far left
    for nid, _, _, kind in model.nodes:
        readers = [layer[b] for a, b in model.edges if a == nid]
        if kind in ("input", "wrt") and readers:
            layer[nid] = min(readers) - 1
    columns: dict[int, list[str]] = {}
    for nid, _, _, _ in model.nodes:
        columns.setdefault(layer[nid], []).append(nid)
    info = {nid: (title, shape, kind) for nid, title, shape, kind in model.nodes}
    width = {nid: max(len(t), len(s)) * CHAR_W + 2 * PAD for nid, (t, s, _) in info.items()}
    pos: dict[str, tuple[float, float]] = {}
    x = 10.0
    order: dict[str, float] = {}
    for k in sorted(columns):
        col = columns[k]
        col.sort(key=lambda n: sum(order.get(d, 0) for d in deps.get(n, [])) / max(len(deps.get(n, [])), 1))
        for row, nid in enumerate(col):
            order[nid] = row
            pos[nid] = (x, 10 + row * (NODE_H + GAP_Y))
        x += max(width[n] for n in col) + GAP_X
    total_w = x - GAP_X + 10
    total_h = 10 + max(len(c) for c in columns.values()) * (NODE_H + GAP_Y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total_w:.0f}" height="{total_h:.0f}" '
        f'viewBox="0 0 {total_w:.0f} {total_h:.0f}" role="img" aria-label="the graph and its gradient flow">',
        "<defs>"
        '<marker id="fwd" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
        '<marker id="grad" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#c0392b"/></marker></defs>',
    ]

    def curve(x1, y1, x2, y2):
        mid = (x1 + x2) / 2
        return f"M{x1:.1f},{y1:.1f} C{mid:.1f},{y1:.1f} {mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"

    for a, b in model.edges:
        (ax, ay), (bx, by) = pos[a], pos[b]
        d = curve(ax + width[a], ay + NODE_H / 2 - 5, bx, by + NODE_H / 2 - 5)
        parts.append(f'<path d="{d}" fill="none" stroke="#555" stroke-width="1.3" marker-end="url(#fwd)"/>')
    for a, b, label in model.grads:
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1, x2, y2 = ax, ay + NODE_H / 2 + 7, bx + width[b], by + NODE_H / 2 + 7
        d = curve(x1, y1, x2, y2)
        parts.append(
            f'<path class="grad" d="{d}" fill="none" stroke="#c0392b" stroke-width="1.3" '
            f'stroke-dasharray="5,4" marker-end="url(#grad)"/>'
        )
        parts.append(
            f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 + 13:.1f}" font-size="11" fill="#c0392b" '
            f'text-anchor="middle" font-family="monospace">{html.escape(label)}</text>'
        )
    for nid, (title, shape, kind) in info.items():
        nx, ny = pos[nid]
        rx = 20 if kind in ("input", "wrt") else 4
        parts.append(
            f'<g class="node {kind}"><rect x="{nx:.1f}" y="{ny:.1f}" width="{width[nid]:.1f}" height="{NODE_H}" '
            f'rx="{rx}" fill="{FILL[kind]}" stroke="{STROKE[kind]}" stroke-width="1.4"/>'
            f'<text x="{nx + width[nid] / 2:.1f}" y="{ny + 18:.1f}" font-size="12.5" text-anchor="middle" '
            f'font-family="monospace">{html.escape(title)}</text>'
            f'<text x="{nx + width[nid] / 2:.1f}" y="{ny + 35:.1f}" font-size="11.5" text-anchor="middle" '
            f'font-family="monospace" fill="#555">{html.escape(shape)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def page(md: str, model: GraphModel, title: str) -> str:
    body = markdown_to_html(md, graph_svg(model))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n</body>\n</html>\n"
    )
