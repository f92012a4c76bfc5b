"""Errors raised by the dataset layer."""

from __future__ import annotations

from vla.errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing, malformed or inconsistent.

    The message always names the offending path so a user can find the file.
    """
