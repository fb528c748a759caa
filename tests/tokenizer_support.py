"""What the tokenizer tests share: a token sequence shown through a streaming decoder, as the
console and the REPL show a reply while it is generated."""

from __future__ import annotations


def stream_pieces(tokenizer, ids: list[int]) -> list[str]:
    """What the streaming decoder shows: one piece per token fed, then what flush() gives."""
    decoder = tokenizer.stream_decoder()
    return [decoder.feed(i) for i in ids] + [decoder.flush()]


def assert_streams_whole_characters(tokenizer, text: str) -> None:
    """``text``'s tokens, streamed, join to ``text``, and every piece is whole characters of it: no
    replacement character appears on the way (a byte-level token can end in the middle of a
    character; those bytes wait for the rest)."""
    pieces = stream_pieces(tokenizer, tokenizer.encode(text))
    assert "".join(pieces) == text
    assert sum(piece.count("\ufffd") for piece in pieces) == text.count("\ufffd")
