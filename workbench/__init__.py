"""LLM Workbench: tokenize real text, build a GPT, look inside it, train, fine-tune and evaluate it."""
