"""The Serve app's settings live in :mod:`medray.serving.settings` (library code must not
import ``serve_apps``); re-exported here for the app and older imports."""

from medray.serving.settings import (  # noqa: F401
    LOOPBACK_HOSTS,
    AppArgs,
    AuthSettings,
    GenerationSettings,
    LimitSettings,
    ModelSettings,
    RateLimitSettings,
    RetrievalSettings,
    TimeoutSettings,
    parse_args,
)
