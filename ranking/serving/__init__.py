"""Trained models in use: checkpoints, scoring and TREC runs, the product index, ONNX,
export/import, the ``Ranker`` API, the teacher-score cache."""
