"""``python -m ops.standins KIND [args]``: run one stand-in server in the foreground."""
from __future__ import annotations

import importlib
import sys

STANDINS = {
    "claude": "ops.standins.claude_api",      # Anthropic Messages API
    "openai": "ops.standins.openai_api",      # OpenAI-compatible chat completions (ollama, llama.cpp, vLLM)
    "chat-site": "ops.standins.chat_site",    # ChatGPT and Gemini web skins
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in STANDINS:
        print(f"usage: python -m ops.standins {{{'|'.join(STANDINS)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(STANDINS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
