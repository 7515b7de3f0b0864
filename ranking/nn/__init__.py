"""Model building blocks (``torch.nn``): encoders, towers, the cross-encoder and bi-encoder
networks, the score prior, fast inference, numeric precision."""
