"""Scorers beside the models: random, text baselines (BM25, TF-IDF, zero-shot MiniLM), LambdaMART,
and the score prior's features."""
