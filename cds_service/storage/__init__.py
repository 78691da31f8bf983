"""Durable state: feedback, cards issued (to attribute feedback), and seen JWT ids (replay)."""

from cds_service.storage.db import Database

__all__ = ["Database"]
