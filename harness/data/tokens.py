"""Token ids of a continuation, derived the safe way (claims.md, "BOS tokens").

Llama-style tokenizers add BOS when encoding an answer alone, and SentencePiece may
encode " Paris" as a lone space piece followed by "Paris". So a continuation's tokens
are the ids of ``prompt + continuation`` minus those of ``prompt``.
"""

from __future__ import annotations


class TokenBoundaryError(ValueError):
    """The prompt's last token merges with the continuation's first characters."""


def continuation_ids(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids): the ids of ``prompt + continuation`` split where the
    ids of ``prompt`` alone end. Raises TokenBoundaryError if the two encodings disagree
    inside the prompt (a merge across the boundary)."""
    alone = list(tokenizer(prompt).input_ids)
    full = list(tokenizer(prompt + continuation).input_ids)
    if full[: len(alone)] != alone or len(full) == len(alone):
        raise TokenBoundaryError(
            f"Tokenizing {prompt[-30:]!r} + {continuation!r} changes the prompt's own tokens; "
            "end the prompt at a word boundary (no trailing space) and start the continuation with its space."
        )
    return alone, full[len(alone) :]


def truncate_left(ids: list[int], max_tokens: int, keep_first: bool) -> list[int]:
    """The last ``max_tokens`` ids, keeping the first id (BOS) when ``keep_first``."""
    if len(ids) <= max_tokens:
        return ids
    return ids[:1] + ids[len(ids) - (max_tokens - 1) :] if keep_first else ids[len(ids) - max_tokens :]


def starts_with_special(tokenizer, ids: list[int]) -> bool:
    return bool(ids) and ids[0] in set(getattr(tokenizer, "all_special_ids", ()))
