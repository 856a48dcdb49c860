"""Span editing: word-level diffs, character spans, token masks, preference pairs."""
