"""Serving building blocks that work without Ray Serve.

Each model the HTTP API uses is a plain class here (``Reasoner``, ``Summariser``,
``Embedder``, ``Guard``, ``Retriever``); ``serve_apps`` wraps each in a Ray Serve
deployment, and the single-process baseline calls them directly.
"""
