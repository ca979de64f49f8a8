"""Marketer pages of the profiles app, one module per subject."""
