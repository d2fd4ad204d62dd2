"""Errors a user can act on. Every message names the file, key and value at fault and what to do."""

from __future__ import annotations


class KitError(Exception):
    """Bad input or a refusal: printed as one line, exit code 2, nothing started or written."""

    exit_code = 2


class ProfileError(KitError):
    pass


class FactsError(KitError):
    pass


class Refusal(KitError):
    """The plan cannot work on these facts (GPU, engine, model); the message says what to change."""


class ValidationFailed(KitError):
    """The installed vLLM's own argument parser rejected the rendered command."""
