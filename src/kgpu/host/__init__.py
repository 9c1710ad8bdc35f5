"""Read-only facts about the node, always relative to a filesystem root so tests can use fixture trees."""
