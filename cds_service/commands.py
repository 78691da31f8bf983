"""The registry of ``python -m cds_service`` commands.

It lives apart from ``__main__`` because ``python -m`` runs that file as a second module object:
a registry there would exist twice and commands registered from ``cli.py`` would land in the
wrong one.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    handler: Handler
    configure: Callable[[argparse.ArgumentParser], None]
    help: str


COMMANDS: dict[str, Command] = {}


def command(name: str, help_text: str) -> Callable[[Handler], Handler]:
    """Register ``fn``; its optional ``configure(parser)`` attribute adds the arguments."""

    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(fn, getattr(fn, "configure", lambda _parser: None), help_text)
        return fn

    return register
