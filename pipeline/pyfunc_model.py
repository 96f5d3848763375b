"""MLflow models-from-code entry: loading the logged model runs this file; nothing is unpickled."""

import mlflow

from pipeline.forecast import PyfuncForecaster

mlflow.models.set_model(PyfuncForecaster())
