"""Rules: pure functions of facts, knowledge and an explicit ``now``. No HTTP, no raw JSON."""
