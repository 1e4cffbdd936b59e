"""The HTTP API: ``create_app`` builds the FastAPI app over an ``App``, a ``Catalog`` and a
``ReplayEngine``; ``serve`` runs it with uvicorn."""

from streamprov.api.app import create_app

__all__ = ["create_app"]
