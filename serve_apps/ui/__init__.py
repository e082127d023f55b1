"""The web UI (Gradio) over the gateway's HTTP API: :func:`mount_ui` puts it at ``/ui``."""

from .app import build_blocks, mount_ui

__all__ = ["build_blocks", "mount_ui"]
