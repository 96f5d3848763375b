"""How good a model is: metrics beside the naive baselines, rolling-origin backtests, what they record in MLflow,
and the figures."""
