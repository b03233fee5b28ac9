"""Hugging Face glue: converters from transformers' Perceiver models (the only code that imports transformers
models)."""
