"""``gradgen init NAME``: a commented starter spec that builds as it is."""

from __future__ import annotations

STARTER = """\
# A gradgen spec: `gradgen build {path}` turns it into {name}.py (forward, backward,
# value_and_grad) and test_{name}.py.  `gradgen explain {path}` shows the derivation and its cost,
# `gradgen ops` lists the ops; the README's "The spec format" section describes every key.
# For completion in VS Code and other editors: `gradgen schema --out gradgen.schema.json` next to
# this file, and make the first line `# yaml-language-server: $schema=gradgen.schema.json`.
name: {name}
description: A one-hidden-layer classifier; edit the inputs and the graph to make it yours.

# inputs, in the order the generated functions take them.  A shape is a list of dims: a symbolic
# name (N, D, ...) stands for one size everywhere it appears; 1 broadcasts as in NumPy.
inputs:
  x: [N, D]                      # a batch of N examples with D features
  y: {{shape: [N], dtype: int}}    # class labels 0..C-1 (int inputs are never differentiated)
  W1: [D, H]
  b1: [H]
  W2: [H, C]
  b2: [C]

# graph entries, evaluated top to bottom: Python expressions over the inputs and earlier entries.
graph:
  z1: x @ W1 + b1                # b1 is broadcast over the N rows
  h: tanh(z1)
  logits: h @ W2 + b2
  loss: softmax_cross_entropy(logits, y)   # mean over the N rows

output: loss                     # default: the last graph entry
wrt: [W1, b1, W2, b2]            # default: every float input
"""


def starter(name: str, path: str) -> str:
    return STARTER.format(name=name, path=path)
