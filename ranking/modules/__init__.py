"""LightningModules: the listwise ranker base, the cross-encoder (``RankingModule``), the bi-encoder
student, masked-LM pretraining; their optimiser."""
