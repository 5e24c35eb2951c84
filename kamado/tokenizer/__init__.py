"""Tokenizer stage: SentencePiece training, Hugging Face export, evaluation, packed token shards."""
