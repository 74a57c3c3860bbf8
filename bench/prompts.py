"""The benchmark's varied prompts, shared by the raw measurement and the HTTP client so
both sides process the same inputs: request ``i`` (and raw batch row ``i``) uses
prompt ``i % len(PROMPTS)``.

/v1/completions gets each question followed by :data:`COMPLETION_SUFFIX`. Sent bare,
most of them make the instruct model's greedy first token ``<|im_end|>``, whose text is
empty, so (with ``ignore_eos``) the first text would arrive a decode step late and TTFT
would measure two tokens, not one; with the suffix every first token has text.
"""

from __future__ import annotations

PROMPTS: tuple[str, ...] = (
    "Write a short story about a robot who learns to paint.",
    "Explain photosynthesis to a ten-year-old.",
    "What is the capital of France, and what is it famous for?",
    "List three colours and an object of each colour.",
    "Tell me a joke about cats.",
    "How do airplanes stay in the air?",
    "Describe the ocean at night in a few sentences.",
    "Why is the sky blue?",
    "Give me a recipe for a simple tomato soup.",
    "What are the planets of the solar system?",
    "Summarise the plot of Romeo and Juliet.",
    "How does a bicycle work?",
    "Write a haiku about autumn leaves.",
    "What is the difference between weather and climate?",
    "Suggest a name for a small bakery and explain it.",
    "Explain what a computer program is in simple words.",
    "What should I pack for a weekend hiking trip?",
    "Why do we have seasons on Earth?",
    "Describe your ideal library.",
    "How do bees make honey?",
)


COMPLETION_SUFFIX = " Here is my answer:"


def question(i: int) -> str:
    return PROMPTS[i % len(PROMPTS)]


def prompt(i: int) -> str:
    """The /v1/completions prompt of request ``i``."""
    return question(i) + COMPLETION_SUFFIX


def chat_messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": question(i)}]


# Prompt lengths of the c=1 scenario by prompt length (``--dtypes``): a decode step's
# cost should not grow as its context shrinks, and a benchmark of mid-length prompts
# alone hid a format that was slow on short ones.
PROMPT_LENGTHS = (4, 16, 64, 256)
SHORT_PROMPT = "Once upon a time"  # 4 tokens for SmolLM2's tokenizer


def prompt_of_length(tokens: int) -> str:
    """A /v1/completions prompt of about ``tokens`` tokens: :data:`SHORT_PROMPT` for 4,
    else the start of ``bench/data/eval_text.txt`` (English prose, about 1.15 tokens a
    word for SmolLM2; the server's usage reports the exact count)."""
    if tokens <= 4:
        return SHORT_PROMPT
    from pathlib import Path

    words = (Path(__file__).with_name("data") / "eval_text.txt").read_text(encoding="utf-8").split()
    return " ".join(words[: max(1, round(tokens / 1.15))])
