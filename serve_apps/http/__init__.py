"""The HTTP layer of MedRay, split by concern; :func:`serve_apps.gateway.create_app`
assembles it (the endpoint list and the injection rule are in that module's docstring).

- :mod:`.errors`: the JSON error shape, :class:`~.errors.APIError` and the exception handlers.
- :mod:`.middleware`: the body-size limit and the request log.
- :mod:`.deps`: :class:`~.deps.Context`, built once per app (limits, key check, image
  decoding, adapter and token checks), and the FastAPI dependencies that read it.
- One router per endpoint group: :mod:`.meta` (health, ready, models, adapters),
  :mod:`.generate`, :mod:`.analyze`, :mod:`.search`, :mod:`.chat` (OpenAI-compatible).
"""
