"""Built-in demo corpus: synthetic Aff-Wild2-layout videos with labels, made from real face photos.

`generate_corpus(out_dir, seed=...)` is the entry point (see `pipeline.demo.corpus`).
"""

from pipeline.demo.corpus import generate_corpus

__all__ = ["generate_corpus"]
