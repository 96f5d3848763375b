"""The Lightning side of training: the Trainer and its callbacks, precision on this machine, the MLflow logger,
distributed training, resume, hyperparameter search and conformal calibration."""
