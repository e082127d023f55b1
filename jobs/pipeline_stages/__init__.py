"""The stages of ``jobs/pipeline.py``, one module per group (see its docstring)."""
