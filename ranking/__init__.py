"""shoprank's library: losses, metrics, encoders, towers and LightningModules (no Hydra here)."""
