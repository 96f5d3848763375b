"""The MLflow pyfunc that MLflow's own tools serve a model with (`mlflow models serve`, `predict`, `spark_udf`):
history rows in, forecasts out, a refused request as HTTP 400 with its one line. The pipeline's stages never run
it: they read the model as data (pipeline/inference/saved_model.py)."""

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST

from pipeline.errors import ConfigError, DataError
from pipeline.inference.model_format import read_model
from pipeline.inference.saved_model import SavedModel, as_text_times


class RequestRefused(MlflowException):
    """A request the model refuses, answered by `mlflow models serve` with HTTP 400 and this one line.

    MLflow's scoring server rewrites the message of an error raised in predict to start with the whole request
    ("Failed to predict data '...'"); this error keeps its own line."""

    def __init__(self, message: str):
        self._line = message
        super().__init__(message, error_code=BAD_REQUEST)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        pass  # the scoring server's rewrite (see the class docstring)


class PyfuncModel(mlflow.pyfunc.PythonModel):
    """The pyfunc MLflow's tools run: history rows in (the training file's columns, times as ISO 8601 text), the
    next `horizon` steps out, times as text in the input's zone."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.model = SavedModel(*read_model(Path(context.artifacts["spec"]), Path(context.artifacts["weights"])))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """`params` (a model.likelihood model's signature declares them): {"samples": N, "seed": S} for sample
        paths, as the forecast stage's samples= and seed=."""
        params = params or {}
        try:
            out = self.model.forecast(model_input, source="the request", samples=int(params.get("samples", 0)),
                                      seed=int(params.get("seed", 0)))
        except (DataError, ConfigError) as error:
            raise RequestRefused(str(error)) from None
        return as_text_times(out, self.model.data.time_column)
