"""Local stand-ins for the real LLM services (no internet here): the real clients talk to them.

``python -m ops.standins claude|openai|chat-site [--port N] [--scenario NAME]`` runs one in the
foreground, printing its base URL; tests start them in-process or as subprocesses. Each reproduces the
behaviour that matters to a worker (streaming, limits with reset times, overloads, errors, login walls),
switchable per request or at run time, never the model itself.
"""
