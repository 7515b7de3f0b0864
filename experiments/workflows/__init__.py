"""The workflows behind the entry points, the only code that handles Hydra/OmegaConf objects.

* :mod:`.train` - ``train(cfg)``, ``evaluate(cfg)`` (test and report beside baselines);
* :mod:`.distill` - ``distill(cfg)``; :mod:`.pretrain` - ``pretrain(cfg)``;
* :mod:`.predict` - ``predict(cfg)``; :mod:`.export` - ``export(cfg)``;
  :mod:`.engagement_check` - ``check(cfg)``;
* :mod:`.fit` - the one fit routine of train, distill and pretrain (seed, output directory
  guard, resume, best checkpoint, monitor check, W&B run);
* :mod:`.launch` - ``run_job``, the guard every entry point runs its workflow through (DDP under
  multirun, launchers) and the Hydra callbacks; :mod:`.cli` - user errors as one line;
* :mod:`.config` - config -> library objects (DataModule, module, Trainer, loggers);
  :mod:`.resume` - ``ckpt_path=last`` and the resumed config; :mod:`.run_dir` - no run
  overwritten; :mod:`.wandb_run` - W&B run helpers (config, tables, results, comparisons).
"""
