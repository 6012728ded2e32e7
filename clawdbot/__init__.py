"""Clawdbot: a self-hosted chatbot served as a gRPC microservice mesh.

The installed layout puts everything under this one namespace: `clawdbot.services.*`,
`clawdbot.gateway`, `clawdbot.shared` and the generated stubs in `clawdbot.v1`.
"""

__version__ = "0.1.0"
