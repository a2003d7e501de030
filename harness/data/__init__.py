"""Loaders that turn data files into typed records."""

from harness.data.prose import Corpus, Paragraph, load_prose

__all__ = ["Corpus", "Paragraph", "load_prose"]
