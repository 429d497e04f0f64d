"""Benchmark evaluation in plain Python: prompts, answer parsing, open-ended metrics and an optional LLM judge.

Nothing here imports torch or Lightning; the model side (generation, option scoring) lives elsewhere.
"""
