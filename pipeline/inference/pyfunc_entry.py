"""MLflow models-from-code entry, for MLflow's own tools (`mlflow models serve`, `predict`, `spark_udf`): loading
the logged pyfunc runs this file and the pipeline package stored with the model. The pipeline's own stages never
run it: they read the model as data (pipeline/inference/saved_model.py)."""

import mlflow

from pipeline.inference.pyfunc import PyfuncModel

mlflow.models.set_model(PyfuncModel())
