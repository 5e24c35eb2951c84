"""Release: a Hugging Face checkpoint users can load anywhere, verified against training, with a model card."""
