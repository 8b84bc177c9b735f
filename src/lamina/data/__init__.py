"""Corpus sources -> tokenizer -> packed token memmap -> TextDataModule."""

from lamina.data.module import TextDataModule

__all__ = ["TextDataModule"]
