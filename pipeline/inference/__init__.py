"""A trained model after training: its format on disk, logged and loaded with digests, batch and streaming
forecasts, the output files, a folder of inputs (locally or on Dask), and the pyfunc MLflow serves."""
