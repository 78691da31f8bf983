"""Clinical knowledge loaded from ``cards/``: services, value sets, thresholds, recommendations."""

from cds_service.knowledge.loader import Knowledge, KnowledgeError, load_knowledge

__all__ = ["Knowledge", "KnowledgeError", "load_knowledge"]
