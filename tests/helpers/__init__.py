"""What several test modules share: toy models and tokenizers, a toy generation world, pipeline runs."""
