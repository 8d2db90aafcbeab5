"""LLM Workbench: tokenize real text, build a GPT, look inside it, train, fine-tune and evaluate it."""

from .allocator import keep_freed_memory

keep_freed_memory()  # glibc keeps freed tensor memory for reuse: no page faults every step (allocator.py)
