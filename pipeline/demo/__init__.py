"""Built-in demo corpus: synthetic Aff-Wild2-layout videos with labels, made from real face photos, plus
C-EXPR-DB (compound expressions) and Hume-Vidmimic2 (mimicry intensities) parts with the same people.

`generate_corpus(out_dir, seed=...)` is the entry point (see `pipeline.demo.corpus`).
"""

from pipeline.demo.corpus import generate_corpus

__all__ = ["generate_corpus"]
