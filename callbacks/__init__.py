"""Lightning callbacks only: resuming a run's data order mid-epoch, pair throughput.

They may import ``ranking`` and ``data_modules``, never ``experiments`` (``make lint``).
"""
