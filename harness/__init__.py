"""depth-claims: check published claims about how language models use their depth."""

__version__ = "0.1.0"
