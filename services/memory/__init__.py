"""Session memory: conversations in Redis or the embedded store, served as clawdbot.v1.Memory (docs/memory.md)."""
