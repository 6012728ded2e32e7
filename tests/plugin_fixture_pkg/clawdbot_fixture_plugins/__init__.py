"""Plugins a third party might write, used by Clawdbot's tests."""
