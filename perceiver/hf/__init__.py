"""Hugging Face glue: converters from transformers' Perceiver models and krasserm's directories, and
(``perceiver.hf.auto``, whose import registers them) transformers' Auto classes and pipelines for this project's
models. Importing this package imports no transformers code."""
